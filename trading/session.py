"""A simulated paper-trading session over the lake's bars: the live loop, bar by bar, on the simulated broker.

At each bar t: the broker fills what was sent at t-1 (at t's open) and runs brackets; fills go to the
ledger; the breakers are checked; the decision pipeline decides on bars up to t; the executor sends
one order per EXECUTE decision. The same strategy functions, pipeline, limits, executor and ledger
as paper trading on Alpaca, with a broker that fills from the lake, so the session can be compared
with the backtest of the same strategy over the same bars (see `trading.analytics.drift_report`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from strategies.base import Strategy
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.context import build_contexts
from trading.events import EventType, MemorySink
from trading.execution import Executor
from trading.ledger import Ledger
from trading.models import Mode, PortfolioSnapshot
from trading.pipeline import DecisionPipeline, PipelineConfig


@dataclass
class SessionReport:
    run_id: str
    bars: int
    decisions: int
    orders: int
    fills: int
    broker: SimulatedBroker
    equity: pl.DataFrame  # ts, cash, equity


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
) -> SessionReport:
    """Walks `bars` (all symbols, one timeframe) in time order; bars before `trade_from` only warm up."""
    run_id = run_id or uuid.uuid4().hex
    broker = SimulatedBroker(sim or SimConfig(), cash=initial_cash)
    executor = Executor(broker, ledger, mode=Mode.SIMULATION, run_id=run_id)
    executor.safety = executor.safety.model_copy(update={"flatten_at_end": False})
    executor.ensure_funded()
    decider = DecisionPipeline(pipeline)
    ordered = bars.sort("ts", "symbol")
    stamps = ordered["ts"].unique().sort().to_list()
    lookback = strategy.lookback(params) + 1
    peak = initial_cash
    decisions = orders = 0
    curve: list[tuple[datetime, float, float]] = []
    by_ts = {key[0]: frame for key, frame in ordered.partition_by("ts", as_dict=True).items()}
    for index, ts in enumerate(stamps):
        now = by_ts[ts]
        executor.record_fills(broker.on_bar({r["symbol"]: r for r in now.iter_rows(named=True)}))
        account = broker.account()
        curve.append((ts, account.cash, account.equity))
        peak = max(peak, account.equity)
        if progress and (index % 25 == 0 or index + 1 == len(stamps)):
            progress(index + 1, len(stamps))
        if (trade_from is not None and ts < trade_from) or index + 1 < lookback:
            continue
        executor.check_breakers(account.equity, curve[max(0, index - 1)][2], peak)
        window = ordered.filter((pl.col("ts") <= ts) & (pl.col("ts") >= stamps[max(0, index - lookback - 1)]))
        snapshot = PortfolioSnapshot(
            cash=account.cash,
            equity=account.equity,
            positions=broker.positions(),
            prices={r["symbol"]: r["close"] for r in now.iter_rows(named=True)},
            start_of_day_equity=curve[max(0, index - 1)][2],
            peak_equity=peak,
        )
        contexts, skipped = build_contexts(window, strategy, params, ts, snapshot)
        sink = MemorySink()
        result = decider.run(contexts, snapshot, as_of=ts, run_id=run_id, mode=Mode.SIMULATION, sink=sink, skipped=skipped)
        # Only what a trader reads later: signals, decisions, costs (proposals etc. of HOLDs are noise here).
        ledger.append_many(e for e in sink.events if e.type != EventType.SIGNAL or e.symbol in {d.symbol for d in result.executed()})
        decisions += len(result.decisions)
        orders += len(executor.execute(result.decisions, broker.positions()))
    equity = pl.DataFrame(curve, schema={"ts": ordered.schema["ts"], "cash": pl.Float64, "equity": pl.Float64}, orient="row")
    return SessionReport(run_id, len(stamps), decisions, orders, len(broker.fills), broker, equity)


def session_bars(lake_root: Path, symbols: list[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
    from lake.store import read_bars

    dataset = "resampled" if timeframe in ("5m", "15m", "1h") else "bars"
    return read_bars(lake_root, symbols, timeframe, start, end, dataset=dataset)
