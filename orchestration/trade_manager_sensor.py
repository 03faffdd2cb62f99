"""The trade manager's polling fallback: one pass over the open brackets per tick (paper/live only),
and `run_trade_manager`, the long-running stream process (`quantlake trade-manager`).

The stream (`trading.trade_manager.TradeManager.stream`) reacts within the second; this sensor makes
sure nothing is left unprotected when no stream runs or an update was lost: it reads the orders and
positions through alpaca-py's `TradingClient` and sends what is missing. Passes are idempotent (leg
ids derived from the entry), so the stream and the sensor may run at the same time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from assets.resources import MarketDataResource, TradingResource

if TYPE_CHECKING:
    from trading.trade_manager import Extremes, TradeManager

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)  # the tick's clock (tests freeze it)


@dg.sensor(
    name="trade_manager_sensor",
    minimum_interval_seconds=30,
    # On by default: an Alpaca entry's exits exist only once a pass has run (a no-op outside paper/live).
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Paper/live: follows each bracketed entry on Alpaca (target 1 exits half, the stop moves to "
        "breakeven, target 2 exits the rest) by polling orders; launches no run."
    ),
)
def trade_manager_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    # No resource parameters: Dagster would build (and validate the config schemas of) the trading and
    # market data resources at every evaluation, ~15-30 ms of CPU, also in the modes that skip here.
    # The Definitions' own resources are built from the settings only when there is work.
    from orchestration.resources import market_data_resource, trading_resource
    from orchestration.settings import settings
    from trading.models import Mode

    env = settings()
    if env.mode not in (Mode.PAPER.value, Mode.LIVE.value):
        return dg.SkipReason(f"mode {env.mode}: no Alpaca orders to manage")
    run_id = f"trade_manager_sensor:{context.cursor or 'first'}"
    with initialized(trading_resource(env), market_data_resource(env)) as (trading, market_data):
        with trade_manager(trading, market_data, run_id=run_id) as manager:
            done = manager.sync_all()
    context.update_cursor(_now().isoformat())
    acted = {entry: actions for entry, actions in done.items() if actions}
    lines = [f"{entry}: {'; '.join(actions)}" for entry, actions in sorted(acted.items())]
    lines += [f"UNPROTECTED {symbol}: {qty:g} share(s) without a stop" for symbol, qty in sorted(manager.unprotected.items())]
    if not lines:
        return dg.SkipReason(f"{len(done)} open bracket(s), nothing to do")
    context.log.info("trade manager: %s", " | ".join(lines))
    return dg.SkipReason(f"{len(done)} open bracket(s): " + " | ".join(lines))


TRADE_MANAGER_SENSORS = [trade_manager_sensor]


@contextmanager
def trade_manager(trading: TradingResource, market_data: MarketDataResource | None, *, run_id: str) -> Iterator[TradeManager]:
    """The one way the sensor and the stream process build a `TradeManager`: the resource's Alpaca
    broker, its ledger (open for the block), its mode, this module's clock and Alpaca's bar extremes."""
    from trading.brokers.alpaca import AlpacaBroker
    from trading.models import Mode
    from trading.trade_manager import TradeManager

    broker = trading.broker()
    if not isinstance(broker, AlpacaBroker):
        raise TypeError(f"trade manager: mode {trading.mode} gives a {type(broker).__name__}, not Alpaca's broker")
    with trading.ledger() as ledger:
        yield TradeManager(broker, ledger, run_id=run_id, mode=Mode(trading.mode), clock=_now, extremes=bar_extremes(market_data))


def bar_extremes(market_data: MarketDataResource | None) -> Extremes | None:
    """The manager's view of target 1 for one-share entries: the high and low of Alpaca's minute bars
    in [start, end). None unless the bars are Alpaca's (another source's prices are not the fills')."""
    if market_data is None or market_data.source != "alpaca":
        return None
    from lake.errors import SourceError

    source = market_data.build("1m")

    def extremes(symbol: str, start: datetime, end: datetime) -> tuple[float, float] | None:
        try:
            bars = source.fetch([symbol], "1m", start, end)
        except SourceError as error:  # the next pass asks again; the stop meanwhile stays where it is
            log.warning("trade manager: %s bars %s..%s unreadable: %s", symbol, start.isoformat(), end.isoformat(), error)
            return None
        bars = bars.filter((bars["ts"] >= start) & (bars["ts"] < end))
        if bars.is_empty():
            return None
        return float(bars["high"].max()), float(bars["low"].min())  # type: ignore[arg-type]

    return extremes


def run_trade_manager(
    trading: TradingResource,
    stop: threading.Event,
    *,
    stream_url: str | None = None,
    poll_s: float = 5.0,
    market_data: MarketDataResource | None = None,
) -> None:
    """Follows the account's trade updates (and passes every `poll_s` s) until `stop` is set."""
    from trading.models import Mode

    if trading.mode not in (Mode.PAPER.value, Mode.LIVE.value):
        raise ValueError(f"trade manager: mode {trading.mode!r} sends no Alpaca orders (QUANTLAKE_MODE=paper or live)")
    with initialized(trading, market_data) as (trading, market_data):
        _follow(trading, stop, stream_url=stream_url, poll_s=poll_s, market_data=market_data)


@contextmanager
def initialized(
    trading: TradingResource, market_data: MarketDataResource | None
) -> Iterator[tuple[TradingResource, MarketDataResource | None]]:
    """The resources as a run's resource initialization gives them: outside a Dagster run their
    dg.EnvVar fields still hold the variables' names, and the keys are read here."""
    with ExitStack() as resolved:
        trading = resolved.enter_context(trading.process_config_and_initialize_cm())
        if market_data is not None:
            market_data = resolved.enter_context(market_data.process_config_and_initialize_cm())
        yield trading, market_data


def _follow(
    trading: TradingResource, stop: threading.Event, *, stream_url: str | None, poll_s: float, market_data: MarketDataResource | None
) -> None:
    from trading.trade_manager import follow

    with trade_manager(trading, market_data, run_id=f"trade_manager:{_now():%Y%m%dT%H%M%S}") as manager:
        follow(manager, manager.broker, stop, stream_url=stream_url, poll_s=poll_s)
