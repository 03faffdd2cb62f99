"""A simulated paper-trading session over the lake's bars: the live loop, bar by bar, on the simulated broker.

At each bar t, one `trading.step.trading_step` with the clock at t: the broker fills what was sent
at t-1 (at t's open) and runs brackets; fills go to the ledger; the account is reconciled and
marked; the breakers are checked; the decision pipeline decides on bars up to t; the executor sends
one order per EXECUTE decision. The same strategy functions, pipeline, limits, executor and ledger
as paper trading on Alpaca, with a broker that fills from the lake, so the session can be compared
with the backtest of the same strategy over the same bars (see `trading.analytics.drift_report`).

Paper = backtest: `backtest_config(sim, ...)` is the backtest with the session's costs and fills,
`sizing_limits(limits, symbols)` its hard sizing limits. An entry no limit cut is sent with the
strategy's size and the simulated broker sizes it at the fill by the backtest's rule
(`strategies.entries`); a cut one is sent for the quantity the caps leave
(`strategies.entries.capped_quantity`), which the backtest with limits decides the same way. So
the session makes that backtest's orders, fills and equity, and the backtest without limits when
none binds. What the limits do is in the order log (`SessionReport.order_log`,
`trading.analytics.ORDER_LOG_SCHEMA`): what each signal was meant to fill, held, cut or blocked, so
the drift report can put each shortfall down to its cause. Every control (breakers, trading window,
trades per day) is the pipeline's `limits`, as in the decision cycle: the same step.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from backtests.engine import BacktestConfig, SizingLimits
from lake.schema import TIMEFRAMES
from lake.store import LakeRoot
from strategies import controls
from strategies.base import Strategy
from trading.agents.trend_filter import frame_needs
from trading.analytics import ORDER_LOG_SCHEMA, UTC_TS
from trading.brokers.base import client_order_id
from trading.brokers.simulated import CAPPED_AT_FILL, SimConfig, SimulatedBroker
from trading.context import SymbolContext, frames_from, read_frames
from trading.cost import spent_in_month
from trading.events import Event, EventType
from trading.ledger import Ledger, project
from trading.models import Decision, Mode, Side, Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.risk import RiskLimits
from trading.step import trading_step

LIMITING = ("hard limits", "risk review")  # HOLD rationales of the limits (pipeline.DecisionPipeline.run)


@dataclass
class SessionReport:
    run_id: str
    bars: int
    decisions: int
    orders: int
    fills: int
    broker: SimulatedBroker
    equity: pl.DataFrame  # ts, cash, equity
    order_log: pl.DataFrame  # what each signal acted on became: trading.analytics.ORDER_LOG_SCHEMA


def backtest_config(sim: SimConfig, init_cash: float, timeframe: str = "1d") -> BacktestConfig:
    """The backtest with the simulated broker's costs and fill model (next open, the same share
    rounding and sides): one vocabulary, so a session and its backtest cannot be configured apart."""
    return BacktestConfig(
        init_cash=init_cash,
        fill="next_open",
        fees_bps=sim.commission_bps,
        fee_per_share=sim.commission_per_share,
        slippage_bps=sim.slippage_bps,
        fractional=sim.fractional,
        allow_short=sim.allow_short,
        timeframe=timeframe,
    )


def sizing_limits(limits: RiskLimits, symbols: list[str]) -> SizingLimits:
    """The hard limits for the backtest (`run_backtest(..., limits=...)`), every field of the same
    name: position and sector caps (each symbol's sector as `RiskLimits.sector_of` says), open
    positions, shorts, the drawdown breaker, and the session controls the step applies (daily loss,
    trades per day, the trading window and its flatten). The backtest with them makes the session's
    orders."""
    return SizingLimits.from_limits(limits, symbols)


def run_simulated_session(
    *,
    bars: pl.DataFrame,
    ledger: Ledger,
    strategy: Strategy[Any],
    params: Any,
    pipeline: PipelineConfig,
    sim: SimConfig | None = None,
    initial_cash: float = 100_000.0,
    trade_from: datetime | None = None,
    run_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    headlines_at: Callable[[datetime], Mapping[str, Sequence[Mapping[str, Any]]]] | None = None,
    spend_ledger: Ledger | None = None,
    now: datetime | None = None,
    lake_root: LakeRoot | None = None,
) -> SessionReport:
    """Walks `bars` (all symbols, one timeframe) in time order; bars before `trade_from` only warm up.
    `headlines_at(ts)`: the news a decision at bar `ts` may read (`trading.cycle.headlines_over`).
    `spend_ledger` (the trading ledger) and `now` (the run's clock): the session's model spend is real
    money spent on `now`'s day, so it counts against the pipeline's budget there too (`SpendAtNow`).
    `lake_root`: where the other timeframes the graph's nodes read come from (read once for every bar,
    `trading.context.read_frames`); None: from `bars` (the same timeframe, or resampled from 1m bars)."""
    run_id = run_id or uuid.uuid4().hex
    real = SpendAtNow(spend_ledger, now) if spend_ledger is not None and now is not None else None
    broker = SimulatedBroker(sim or SimConfig(), cash=initial_cash)
    decider = DecisionPipeline(pipeline)
    ordered = bars.sort("ts", "symbol")
    stamps = ordered["ts"].unique().sort().to_list()
    lookback = strategy.lookback(params) + 1
    decisions = orders = 0
    curve: list[tuple[datetime, float, float]] = []
    log: list[dict[str, Any]] = []
    by_ts = {key[0]: frame for key, frame in ordered.partition_by("ts", as_dict=True).items()}
    frames = session_frames(decider, ordered, stamps, lake_root)
    for index, ts in enumerate(stamps):
        if progress and (index % 25 == 0 or index + 1 == len(stamps)):
            progress(index + 1, len(stamps))
        if (trade_from is not None and ts < trade_from) or index + 1 < lookback:
            broker.on_bar({r["symbol"]: r for r in by_ts[ts].iter_rows(named=True)})  # warm-up: nothing is sent yet
            account = broker.account()
            curve.append((ts, account.cash, account.equity))
            continue
        window = ordered.filter((pl.col("ts") <= ts) & (pl.col("ts") >= stamps[max(0, index - lookback - 1)]))
        step = trading_step(
            ledger=ledger, broker=broker, decider=decider, strategy=strategy, params=params, bars=window,
            as_of=ts, now=ts, mode=Mode.SIMULATION, run_id=run_id, initial_cash=initial_cash, record_all=False,
            headlines=headlines_at(ts) if headlines_at is not None else None, **(real.spent_at(ledger, ts) if real else {}),
            frames=frames,
        )  # fmt: skip
        curve.append((ts, step.snapshot.cash, step.snapshot.equity))
        decisions += len(step.result.decisions)
        orders += len(step.orders)
        if index + 1 < len(stamps):
            log += _intents(step.result.decisions, {c.symbol: c for c in step.contexts}, broker, step.blocked, stamps[index + 1])
    if real is not None:
        real.record(ledger, run_id)
    equity = pl.DataFrame(curve, schema={"ts": ordered.schema["ts"], "cash": pl.Float64, "equity": pl.Float64}, orient="row")
    return SessionReport(run_id, len(stamps), decisions, orders, len(broker.fills), broker, equity, _order_log(log, broker))


def session_frames(decider: DecisionPipeline, bars: pl.DataFrame, stamps: list[datetime], lake_root: LakeRoot | None) -> dict[str, pl.DataFrame] | None:
    """The other timeframes the graph's nodes read, once for the whole session (each step cuts its own point
    in time): from the lake when given, else from the session's bars, never from a step's short window
    (sized for the strategy's warm-up, not for a node's mean). None when no node reads one."""
    needs = frame_needs(decider.graph.agents.values())
    if not needs or not stamps:
        return None
    if lake_root is None:
        return frames_from(bars, list(needs))
    symbols = sorted(bars["symbol"].unique().to_list())
    bar = TIMEFRAMES[str(bars["timeframe"][0])]
    return read_frames(lake_root, symbols, needs, stamps[-1] + bar, first=stamps[0])


class SpendAtNow:
    """A session's model spend against the trading ledger's budget. Each bar's gate takes the greater of
    two spends: the session's own on the bar's day and month (the budget as live trading would have met
    it on that day), and the money really spent on `now`'s day and month: the trading ledger's (decide
    runs, earlier sessions) plus this session's so far. At the end the session's spend goes to the
    trading ledger, stamped at `now` (one event a run: a retried run does not count it twice)."""

    def __init__(self, trading: Ledger, now: datetime) -> None:
        spent = project(trading)
        self.trading, self.now = trading, now
        self.today, _ = spent.spent_on(now.date())
        self.tokens = spent.tokens_on(now.date())
        self.month = spent_in_month(dict(spent.spent), now.date())

    def spent_at(self, session: Ledger, ts: datetime) -> dict[str, Any]:
        """`trading_step`'s spend arguments at bar `ts`."""
        own = project(session)
        day, per_call = own.spent_on(ts.date())
        total, tokens = sum(own.spent.values()), sum(own.tokens.values())  # this run's ledger: this session's alone
        return {
            "spent_today": max(day, self.today + total),
            "tokens_today": max(own.tokens_on(ts.date()), self.tokens + tokens),
            "spent_month": max(spent_in_month(dict(own.spent), ts.date()), self.month + total),
            "per_call_costs": per_call,
        }

    def record(self, session: Ledger, run_id: str) -> None:
        runs = [p for _, p in session.payloads([EventType.COST]) if p.get("scope") == "run"]  # the steps' and the lessons' summaries
        total = {k: sum(p.get(k) or 0 for p in runs) for k in ("run_cost_usd", "model_calls", "prompt_tokens", "completion_tokens")}
        if total["run_cost_usd"] or total["prompt_tokens"] or total["completion_tokens"]:
            payload = {"scope": "run", "stage": "paper_session", "session_run_id": run_id, **total}
            event_id = hashlib.sha256(f"paper_session|{run_id}".encode()).hexdigest()[:32]
            self.trading.append_many([Event(type=EventType.COST, run_id=run_id, mode=Mode.SIMULATION, as_of=self.now, payload=payload, event_id=event_id)])


def _intents(decisions: list[Decision], contexts: dict[str, SymbolContext], broker: SimulatedBroker, blocked: str | None, fill_ts: datetime) -> list[dict[str, Any]]:
    """One order-log row per signal acted on at this bar: the order sent, or why none was."""
    rows = []
    for d in decisions:
        ctx = contexts.get(d.symbol)
        if ctx is None or ctx.wants is None:
            continue
        side = Side.BUY if ctx.wants == "BUY" else Side.SELL
        row: dict[str, Any] = {"client_order_id": None, "symbol": d.symbol, "side": side.value, "ts": fill_ts, "quantity": 0.0}
        if d.verdict == Verdict.EXECUTE:
            cid = client_order_id(d.strategy, d.symbol, d.decided_at, side)
            reducing = controls.reduces(ctx.position, 1.0 if side == Side.BUY else -1.0)
            if broker.get_order(cid) is None:  # not sent: the executor blocked it (a halt)
                row |= {"status": "blocked", "limited": True, "reason": blocked or "blocked by the executor"}
            else:  # quantity and status are read when the session ends
                row |= {"client_order_id": cid, "status": "", "limited": not reducing and d.size is None, "reason": d.rationale}
        else:
            row |= {"status": "held", "limited": d.rationale.startswith(LIMITING), "reason": d.rationale}
        rows.append(row)
    return rows


def _order_log(rows: list[dict[str, Any]], broker: SimulatedBroker) -> pl.DataFrame:
    for row in rows:
        state = broker.get_order(row["client_order_id"]) if row["client_order_id"] else None
        if state is not None:
            row |= {"quantity": state.quantity, "status": state.status.value, "reason": state.reason or row["reason"]}
            row["limited"] = row["limited"] or state.reason == CAPPED_AT_FILL  # the caps cut it at its fill
    frame = pl.DataFrame(rows, schema={**ORDER_LOG_SCHEMA, "ts": pl.Datetime("us", "UTC")}, orient="row") if rows else pl.DataFrame(schema=ORDER_LOG_SCHEMA)
    return frame.with_columns(pl.col("ts").cast(UTC_TS))


def session_bars(lake_root: LakeRoot, symbols: list[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
    from lake.store import read_bars

    dataset = "resampled" if timeframe in ("5m", "15m", "1h") else "bars"
    return read_bars(lake_root, symbols, timeframe, start, end, dataset=dataset)
