"""One decision cycle over the lake: point-in-time bars -> contexts -> pipeline -> ledger (-> broker).

The cycle's events are written to the ledger in one transaction at the end: a cycle is recorded
whole or not at all. With a broker (paper/live/simulation), the broker is reconciled first (fail
closed) and each EXECUTE decision becomes one order, never two.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from lake.schema import TIMEFRAMES
from lake.store import read_bars, scan_dataset
from strategies.base import Strategy
from trading.agents.cache import ResponseCache
from trading.agents.tools import standard_tools
from trading.brokers.base import Broker, OrderState
from trading.brokers.simulated import SimulatedBroker
from trading.context import build_contexts
from trading.events import Event, EventType, MemorySink
from trading.execution import Executor
from trading.ledger import Ledger, replay_portfolio
from trading.models import Decision, Mode, PortfolioSnapshot
from trading.pipeline import CycleResult, DecisionPipeline, PipelineConfig


class CycleError(ValueError):
    """The cycle cannot run (no bars, unknown symbols); the message names what is missing."""


@dataclass
class CycleReport:
    run_id: str
    as_of: datetime
    mode: Mode
    result: CycleResult
    snapshot: PortfolioSnapshot
    skipped: dict[str, str]
    estimate: dict[str, float]
    events_written: int
    orders: list[OrderState] = field(default_factory=list)

    def decisions_frame(self) -> pl.DataFrame:
        rows = [d.model_dump(mode="json", exclude={"run_id", "strategy"}) for d in self.result.decisions]
        return pl.DataFrame(rows) if rows else pl.DataFrame()


def load_window(lake_root: Path, symbols: list[str], timeframe: str, as_of: datetime | None, lookback_bars: int) -> pl.DataFrame:
    """Enough recent bars for `lookback_bars` of warm-up before `as_of` (or the lake's latest bar)."""
    bar = TIMEFRAMES[timeframe]
    dataset = "resampled" if timeframe in ("5m", "15m", "1h") else "bars"
    latest: datetime | None = as_of
    if latest is None:
        scan = scan_dataset(lake_root, dataset, timeframe, symbols)
        latest = scan.select(pl.col("ts").max()).collect().item() if scan is not None else None
        if latest is None:
            raise CycleError(f"no {timeframe} bars for {symbols} in the lake at {lake_root}: ingest them first")
    end: datetime = latest + bar
    per_day = 1 if timeframe == "1d" else max(1, int(timedelta(minutes=390) / bar))
    days = int(lookback_bars / per_day * 1.6) + 10  # weekends and holidays
    bars = read_bars(lake_root, symbols, timeframe, end - timedelta(days=days), end, dataset=dataset)
    if bars.is_empty():
        raise CycleError(f"no {timeframe} bars for {symbols} before {end.isoformat()}: ingest them first")
    return bars


def latest_common_bar(bars: pl.DataFrame) -> datetime:
    """The newest bar time every symbol has reached (a decision waits for the slowest symbol)."""
    value: datetime = bars.group_by("symbol").agg(pl.col("ts").max())["ts"].min()  # type: ignore[assignment]
    return value


def spent_on(ledger: Ledger, day: date) -> tuple[float, list[float]]:
    """Money the day's earlier cycles spent, and recent costs per model call (for estimates)."""
    spent, per_call = 0.0, []
    for event in ledger.events(types=[EventType.COST.value]):
        if event.payload.get("scope") != "run":
            continue
        calls = event.payload.get("model_calls", 0)
        if calls:
            per_call.append(event.payload["run_cost_usd"] / calls)
        if event.as_of is not None and event.as_of.date() == day:
            spent += float(event.payload.get("run_cost_usd", 0.0))
    return spent, per_call[-20:]


def tokens_on(ledger: Ledger, day: date) -> int:
    """Model tokens the day's earlier cycles used (priced or not, reported or estimated)."""
    return sum(
        int(e.payload.get("prompt_tokens", 0)) + int(e.payload.get("completion_tokens", 0))
        for e in ledger.events(types=[EventType.COST.value])
        if e.payload.get("scope") == "run" and e.as_of is not None and e.as_of.date() == day
    )


def snapshot_from_ledger(ledger: Ledger, marks: dict[str, float], as_of: datetime, *, initial_cash: float, run_id: str, mode: Mode) -> tuple[PortfolioSnapshot, list[Event]]:
    """The portfolio as the ledger has it, marked at `marks`; funds an empty ledger with `initial_cash`."""
    new: list[Event] = []
    portfolio = replay_portfolio(ledger)
    if not any(True for _ in ledger.events(types=[EventType.DEPOSIT.value])):
        new.append(Event(type=EventType.DEPOSIT, run_id=run_id, mode=mode, as_of=as_of, payload={"amount": initial_cash, "source": "initial"}))
        portfolio.apply_deposit(initial_cash)
    equity = portfolio.equity(marks)
    trades_today = sum(
        1 for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value]) if e.as_of is not None and e.as_of.date() == as_of.date()
    )
    snapshot = PortfolioSnapshot(
        cash=portfolio.cash,
        equity=equity,
        positions={s: q for s, q in portfolio.positions.items() if q},
        prices=marks,
        start_of_day_equity=equity,
        peak_equity=max(equity, initial_cash),
        trades_today=trades_today,
    )
    return snapshot, new


def run_decision_cycle(
    *,
    lake_root: Path,
    ledger: Ledger,
    strategy: Strategy[Any],
    params: Any,
    symbols: list[str],
    timeframe: str,
    pipeline: PipelineConfig,
    as_of: datetime | None = None,
    mode: Mode = Mode.VALIDATION,
    initial_cash: float = 100_000.0,
    cache: ResponseCache | None = None,
    broker: Broker | None = None,
    run_id: str | None = None,
    now: datetime,
) -> CycleReport:
    run_id = run_id or uuid.uuid4().hex
    bars = load_window(lake_root, symbols, timeframe, as_of, strategy.lookback(params) + 1)
    as_of = as_of or latest_common_bar(bars)
    past = bars.filter(pl.col("ts") <= as_of)
    if isinstance(broker, SimulatedBroker) and mode == Mode.SIMULATION:
        advance_simulation(broker, ledger, past, run_id=run_id)
    marks = {r["symbol"]: r["close"] for r in past.group_by("symbol").agg(pl.col("close").last()).iter_rows(named=True)}
    snapshot, pre_events = snapshot_from_ledger(ledger, marks, as_of, initial_cash=initial_cash, run_id=run_id, mode=mode)
    contexts, skipped = build_contexts(past, strategy, params, as_of, snapshot)
    decider = DecisionPipeline(pipeline, cache=cache)
    spent, per_call = spent_on(ledger, as_of.date())
    estimate = decider.estimate(contexts, per_call)
    sink = MemorySink()
    for event in pre_events:
        sink.emit(event)
    tools = standard_tools(past, {c.symbol: c.features for c in contexts}, snapshot.positions, _recent_decisions(ledger))
    result = decider.run(contexts, snapshot, as_of=as_of, run_id=run_id, mode=mode, sink=sink, spent_today=spent, tokens_today=tokens_on(ledger, as_of.date()), tools=tools, skipped=skipped)
    written = ledger.append_many(sink.events)
    orders: list[OrderState] = []
    if broker is not None and mode != Mode.VALIDATION:
        orders = _execute(broker, ledger, result.decisions, mode=mode, run_id=run_id, now=now)
    return CycleReport(run_id, as_of, mode, result, snapshot, skipped, estimate, written, orders)


def advance_simulation(broker: SimulatedBroker, ledger: Ledger, bars: pl.DataFrame, *, run_id: str) -> int:
    """Lets the simulated broker live through the bars since its last one (fills at their opens, brackets)."""
    executor = Executor(broker, ledger, mode=Mode.SIMULATION, run_id=run_id)
    executor.ensure_funded()
    new = bars.filter(pl.col("ts") > broker.now) if broker.now is not None else bars.tail(0)
    fills = 0
    for frame in new.sort("ts", "symbol").partition_by("ts", maintain_order=True):
        fills += executor.record_fills(broker.on_bar({r["symbol"]: r for r in frame.iter_rows(named=True)}))
    if broker.now is None and not bars.is_empty():
        broker.now = bars["ts"].max()  # type: ignore[assignment]  # a new simulation starts at the decision bar
    return fills


def _execute(broker: Broker, ledger: Ledger, decisions: list[Decision], *, mode: Mode, run_id: str, now: datetime) -> list[OrderState]:
    executor = Executor(broker, ledger, mode=mode, run_id=run_id)
    executor.ensure_funded()
    positions = {s: q for s, q in replay_portfolio(ledger).positions.items() if q}
    report = executor.reconcile(positions)  # raises before anything is sent when the broker cannot be read
    start_of_day, peak = _equity_marks(ledger, report["equity"], now)
    executor.check_breakers(report["equity"], start_of_day, peak)  # a trip halts: only exits go out
    return executor.execute(decisions, broker.positions())


def _equity_marks(ledger: Ledger, equity: float, now: datetime) -> tuple[float, float]:
    """(start-of-day equity, peak equity) from the broker equity every reconciliation recorded."""
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    today = now.astimezone(ny).date()
    start, peak = equity, equity
    seen_today = False
    for event in ledger.events(types=[EventType.RECONCILIATION.value]):
        value = event.payload.get("equity")
        if value is None:
            continue
        peak = max(peak, float(value))
        if not seen_today and event.recorded_at.astimezone(ny).date() == today:
            start, seen_today = float(value), True
    return start, peak


def _recent_decisions(ledger: Ledger, limit: int = 200) -> list[dict[str, Any]]:
    recent = [e.payload for e in ledger.events(types=[EventType.DECISION.value])]
    return recent[-limit:]


def day_summary(ledger: Ledger, day: date, marks: dict[str, float]) -> dict[str, Any]:
    """What happened on `day` (by decision time, New York date): decisions, orders, fills, costs, halts."""
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    counts: dict[str, int] = {}
    cost = 0.0
    interventions: list[str] = []
    executed: list[dict[str, Any]] = []
    for event in ledger.events():
        stamp = event.as_of or event.recorded_at
        if stamp.astimezone(ny).date() != day:
            continue
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
        if event.type == EventType.COST and event.payload.get("scope") == "run":
            cost += float(event.payload.get("run_cost_usd", 0.0))
        elif event.type == EventType.INTERVENTION:
            interventions.append(f"{event.payload.get('kind')}: {event.payload.get('reason', '')}")
        elif event.type == EventType.DECISION and event.payload.get("verdict") == "EXECUTE":
            executed.append({k: event.payload.get(k) for k in ("symbol", "side", "quantity", "entry", "stop", "rationale")})
    portfolio = replay_portfolio(ledger)
    return {
        "day": day.isoformat(),
        "events": counts,
        "decisions": counts.get(EventType.DECISION.value, 0),
        "executed": executed,
        "orders": counts.get(EventType.ORDER_SUBMITTED.value, 0),
        "fills": counts.get(EventType.FILL.value, 0),
        "rejections": counts.get(EventType.REJECTION.value, 0),
        "model_cost_usd": round(cost, 6),
        "interventions": interventions,
        "cash": portfolio.cash,
        "positions": {s: q for s, q in portfolio.positions.items() if q},
        "equity": portfolio.equity(marks),
        "realized_pnl": portfolio.realized_pnl,
        "unrealized_pnl": portfolio.unrealized_pnl(marks),
    }


def last_closes(lake_root: Path, symbols: list[str], day: date) -> dict[str, float]:
    """Each symbol's last daily close on or before `day` (marks for the end-of-day report)."""
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    bars = read_bars(lake_root, symbols, "1d", end - timedelta(days=14), end)
    return {r["symbol"]: r["close"] for r in bars.group_by("symbol").agg(pl.col("close").last()).iter_rows(named=True)}


def latest_closes(lake_root: Path, symbols: list[str], now: datetime, timeframe: str = "1m") -> dict[str, tuple[str, float]]:
    """Each symbol's newest bar in the lake: (bar time ISO, close); symbols with no bars are left out."""
    recent = now - timedelta(days=10)
    out: dict[str, tuple[str, float]] = {}
    for symbol in symbols:
        # Recent partitions first (cheap); the whole history only for a lake that stopped updating.
        for since in (recent, None):
            scan = scan_dataset(lake_root, "bars", timeframe, [symbol], since)
            row = scan.sort("ts").select("ts", "close").tail(1).collect() if scan is not None else pl.DataFrame()
            if row.height:
                out[symbol] = (row["ts"][0].isoformat(), float(row["close"][0]))
                break
    return out
