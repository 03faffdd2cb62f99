"""One decision cycle over the lake: one `trading.step.trading_step` at the run's `now`.

The decision bar is the newest bar complete by `now` (or a given `as_of`, never after `now`). The
step reconciles with the broker first (fail closed), checks the breakers, decides and sends one
order per EXECUTE decision, never two; the pipeline's events go to the ledger in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from lake.news.store import read_news
from lake.schema import TIMEFRAMES
from lake.store import LakeRoot, read_bars, scan_dataset
from strategies.base import Strategy
from trading.accounts import AccountBook, AccountPlan, SubAccount
from trading.agents.cache import ResponseCache
from trading.agents.llm import FormatMemory
from trading.agents.tools import ToolRegistry, standard_tools
from trading.agents.trend_filter import frame_needs
from trading.brokers.base import Broker, OrderState
from trading.context import SymbolContext, read_frames
from trading.cost import spent_in_month
from trading.ledger import Ledger, project
from trading.models import Mode, PortfolioSnapshot
from trading.pipeline import CycleResult, DecisionPipeline, PipelineConfig
from trading.step import StepReport, fund, opening_cash, trading_step

HeadlinesAt = Callable[[datetime], dict[str, list[dict[str, Any]]]]  # a bar's time -> its point-in-time headlines


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
    estimate: dict[str, Any]  # the step's estimate, and the budget gate's figures under "budget"
    events_written: int
    orders: list[OrderState] = field(default_factory=list)
    step: StepReport | None = None

    def decisions_frame(self) -> pl.DataFrame:
        rows = [d.model_dump(mode="json", exclude={"run_id", "strategy"}) for d in self.result.decisions]
        return pl.DataFrame(rows) if rows else pl.DataFrame()


def load_window(lake_root: LakeRoot, symbols: list[str], timeframe: str, as_of: datetime | None, lookback_bars: int, now: datetime | None = None) -> pl.DataFrame:
    """Enough recent bars for `lookback_bars` of warm-up before `as_of` (or the newest bar complete by `now`)."""
    bar = TIMEFRAMES[timeframe]
    dataset = "resampled" if timeframe in ("5m", "15m", "1h") else "bars"
    latest: datetime | None = as_of
    if latest is None:
        scan = scan_dataset(lake_root, dataset, timeframe, symbols)
        if scan is not None and now is not None:
            scan = scan.filter(pl.col("ts") + bar <= now)  # a bar is known once its period is over
        latest = scan.select(pl.col("ts").max()).collect().item() if scan is not None else None
        if latest is None:
            by = f" complete by {now.isoformat()}" if now is not None else ""
            raise CycleError(f"no {timeframe} bars for {symbols}{by} in the lake at {lake_root}: ingest them first")
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
    return project(ledger).spent_on(day)


def tokens_on(ledger: Ledger, day: date) -> int:
    """Model tokens the day's earlier cycles used (priced or not, reported or estimated)."""
    return project(ledger).tokens_on(day)


def run_decision_cycle(
    *,
    lake_root: LakeRoot,
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
    checkpoint: str | None = None,
    thread_key: str | None = None,
    account: AccountBook | None = None,
) -> CycleReport:
    """One `trading_step` at the run's `now`, on the newest bar complete by then (or `as_of`).
    `checkpoint`, `thread_key`: where the graph's threads are kept when the pipeline does not say, and
    the cycle's name for them (a rerun of the same cycle resumes them; `DecisionPipeline`)."""
    run_id = run_id or uuid.uuid4().hex
    if as_of is not None and as_of + TIMEFRAMES[timeframe] > now:  # the same rule as the latest bar's
        raise CycleError(
            f"decision bar {as_of.isoformat()} ({timeframe}) is not complete by the run's now {now.isoformat()}: a decision cannot see the future"
        )
    # What the ledger holds is decided on too (its exits, its mark in the equity), listed or not.
    # One pass over the ledger (the projection) answers every question below; later reads catch up.
    projection = project(ledger)
    held = sorted(s for s, q in projection.portfolio.positions.items() if q and s not in symbols)
    bars = load_window(lake_root, [*symbols, *held], timeframe, as_of, strategy.lookback(params) + 1, now)
    unmarked = [s for s in held if s not in set(bars["symbol"].unique().to_list())]
    if unmarked:
        raise CycleError(
            f"the ledger holds {unmarked} but the lake has no recent {timeframe} bars for them: ingest them "
            "(the position needs a mark and its exits) or close the position by hand"
        )
    if as_of is None:
        bars = bars.filter(pl.col("ts") + TIMEFRAMES[timeframe] <= now)
        as_of = latest_common_bar(bars)
    spent, per_call = projection.spent_on(as_of.date())
    # The answer formats servers refused in earlier cycles (other processes) are in the ledger: not re-probed,
    # and the calls made in them since count towards the re-check, whichever process made them.
    decider = DecisionPipeline(pipeline, cache=cache, formats=FormatMemory.from_ledger(ledger), checkpoint=checkpoint, thread_key=thread_key)
    # Other timeframes the graph's nodes read come from the lake: the cycle's window is sized for the
    # strategy, not for them (a 1h frame on a 1d cycle; a daily mean longer than the warm-up).
    needs = frame_needs(decider.graph.agents.values())
    frames = read_frames(lake_root, [*symbols, *held], needs, as_of + TIMEFRAMES[timeframe]) if needs else None

    def tools_for(contexts: list[SymbolContext], snapshot: PortfolioSnapshot) -> ToolRegistry:
        past = bars.filter(pl.col("ts") <= as_of)
        return standard_tools(past, {c.symbol: c.features for c in contexts}, snapshot.positions, _recent_decisions(ledger))

    step = trading_step(
        ledger=ledger,
        broker=broker,
        decider=decider,
        strategy=strategy,
        params=params,
        bars=bars,
        as_of=as_of,
        now=now,
        mode=mode,
        run_id=run_id,
        initial_cash=initial_cash,
        spent_today=spent,
        tokens_today=projection.tokens_on(as_of.date()),
        per_call_costs=per_call,
        spent_month=spent_in_month(projection.spent, as_of.date()),  # the ledger's (every run, every process), like the day's
        tools_for=tools_for,
        headlines=headlines_for(lake_root, pipeline, [*symbols, *held], as_of),
        account=account,
        frames=frames,
    )
    estimate = {**step.estimate, "budget": step.budget.as_dict()} if step.budget is not None else step.estimate
    return CycleReport(run_id, as_of, mode, step.result, step.snapshot, step.skipped, estimate, step.events_written, step.orders, step)


@dataclass
class PipelineRun:
    """One pipeline's cycle in a side-by-side run: its sub-account's capital and the cycle's report."""

    pipeline_id: str
    capital: float
    report: CycleReport


def run_pipelines(
    *,
    plan: AccountPlan,
    configs: dict[str, PipelineConfig],
    ledger: Ledger,
    brokers: dict[str, Broker | None],
    initial_cash: float,
    run_id: str,
    strategy: Strategy[Any],
    params: Any,
    deciders: Mapping[str, tuple[Strategy[Any], Any]] | None = None,
    thread_key: str | None = None,
    **cycle: Any,
) -> list[PipelineRun]:
    """Each pipeline of `plan` decides in turn on its own sub-account of `ledger` (`trading.accounts`):
    funded with its share of `initial_cash`, its events stamped with its id, its broker its own, its
    strategy and params `deciders[id]` (`PipelineSlot.decides_with`; absent: the run's `strategy`, `params`);
    the other arguments are `run_decision_cycle`'s, the same for every pipeline; a paused pipeline is
    left out (nothing decided, nothing written). The plan's account limits are checked, after each
    pipeline's own, on the whole account (`AccountBook`)."""
    capital = plan.allocations(initial_cash)
    account = None
    if plan.limits is not None:  # the account's equity is every sub-account's from the first pipeline's check on
        mode, now = cycle.get("mode", Mode.VALIDATION), cycle["now"]
        for slot in plan.pipelines:
            cash, source = opening_cash(brokers.get(slot.id), mode, capital[slot.id])
            fund(SubAccount(ledger, slot.id), cash, source=source, run_id=run_id, mode=mode, now=now)
        account = AccountBook(ledger, plan.limits)
    runs = []
    for slot in (s for s in plan.pipelines if not s.paused):
        own, own_params = (deciders or {}).get(slot.id, (strategy, params))
        report = run_decision_cycle(
            strategy=own, params=own_params, ledger=SubAccount(ledger, slot.id), pipeline=configs[slot.id], initial_cash=capital[slot.id], broker=brokers.get(slot.id),
            run_id=run_id, thread_key=f"{thread_key or run_id}/{slot.id}", account=account, **cycle,
        )  # fmt: skip
        runs.append(PipelineRun(slot.id, capital[slot.id], report))
    return runs


def _news_lookback(pipeline: PipelineConfig) -> timedelta | None:
    """The longest lookback of the graph's news nodes; None when no node reads news."""
    hours = [float(n.config.get("lookback_hours", 72.0)) for n in (pipeline.graph.nodes if pipeline.graph else []) if n.type == "news_analyst"]
    return timedelta(hours=max(hours)) if hours else None


def _by_symbol(news: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in news.select("symbol", "created_at", "headline", "source").iter_rows(named=True):
        out.setdefault(row.pop("symbol"), []).append(row)
    return out


def headlines_for(lake_root: LakeRoot, pipeline: PipelineConfig, symbols: list[str], as_of: datetime) -> dict[str, list[dict[str, Any]]] | None:
    """Headlines per symbol from the news lake, point in time at `as_of`, over the longest lookback of the
    graph's news nodes; None (no read) when no node reads news."""
    lookback = _news_lookback(pipeline)
    return None if lookback is None else _by_symbol(read_news(lake_root, symbols, as_of, lookback))


def headlines_over(lake_root: LakeRoot, pipeline: PipelineConfig, symbols: list[str], first: datetime, last: datetime) -> HeadlinesAt | None:
    """For a session (a step per bar from `first` to `last`): the news lake read once, then at each bar
    what `headlines_for` reads at it (created in the lookback up to the bar, stored version there by
    then: an edit after the bar leaves the row out). None (no read) when no node reads news."""
    lookback = _news_lookback(pipeline)
    if lookback is None:
        return None
    news = read_news(lake_root, symbols, last, (last - first) + lookback)

    def at(as_of: datetime) -> dict[str, list[dict[str, Any]]]:
        c = pl.col
        return _by_symbol(news.filter((c("created_at") >= as_of - lookback) & (c("created_at") <= as_of) & (c("updated_at") <= as_of)))

    return at


def _recent_decisions(ledger: Ledger, limit: int = 200) -> list[dict[str, Any]]:
    return project(ledger).recent_decisions(limit)


def day_summary(ledger: Ledger, day: date, marks: dict[str, float], exchange: str = "XNYS") -> dict[str, Any]:
    """What happened on `day` (by event time, the exchange's date): decisions, orders, fills, costs, halts."""
    from lake.calendar import get_calendar

    return project(ledger).day_summary(day, marks, get_calendar(exchange).tz)


def last_closes(lake_root: LakeRoot, symbols: list[str], day: date) -> dict[str, float]:
    """Each symbol's last daily close on or before `day` (marks for the end-of-day report)."""
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    bars = read_bars(lake_root, symbols, "1d", end - timedelta(days=14), end)
    return {r["symbol"]: r["close"] for r in bars.group_by("symbol").agg(pl.col("close").last()).iter_rows(named=True)}


def latest_closes(lake_root: LakeRoot, symbols: list[str], now: datetime, timeframe: str = "1m") -> dict[str, tuple[str, float]]:
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
