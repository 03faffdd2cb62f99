"""One trading step: the same code for a decision cycle (one step) and a paper session (a step per bar).

In every mode, at the run's `now` on the decision bar `as_of`:
1. fund an empty ledger (one rule: the account's cash: the broker's, else `initial_cash`);
   in simulation the simulated broker first lives through the bars since its last one, and its
   fills go to the ledger (the market moved);
2. reconcile with the broker, failing closed (validation: the ledger's portfolio at the closes),
   and record the account as a mark;
3. the breakers on that mark (drawdown, daily loss, trades per day); a flatten when the window ends;
4. point-in-time contexts (bars up to `as_of` only; with a reflection node, first the lessons of the
   positions closed by then, `trading.agents.reflection`, their model calls through the budget gate
   first, by the rules when it refuses them; with nodes reading other timeframes, their
   bars closed by the decision bar's close, `trading.context`);
5. the pre-run budget gate (`DecisionPipeline.budget_gate`: the run's worst case against what is left
   of the day's and the month's budgets, as the ledger has them), then the decision pipeline (hard
   limits read the same `RiskLimits`);
6. the executor (one order per EXECUTE decision; new risk refused while a control blocks it);
7. the ledger has every event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from strategies.base import Strategy
from trading.accounts import AccountBook
from trading.agents.reflection import memory_of, pending_lessons, remember
from trading.agents.tools import ToolRegistry
from trading.agents.trend_filter import frame_needs
from trading.brokers.base import Broker, OrderState
from trading.brokers.simulated import SimulatedBroker
from trading.context import SymbolContext, build_contexts, frames_from
from trading.cost import BudgetCheck, spent_in_month
from trading.events import Event, EventType, MemorySink
from trading.execution import Executor
from trading.ledger import Ledger, project, replay_portfolio
from trading.models import Mode, PortfolioSnapshot
from trading.pipeline import CycleResult, DecisionPipeline
from trading.safety import EventLog, Safety

if TYPE_CHECKING:
    from trading.trade_manager import TradeManager

ToolsFor = Callable[[list[SymbolContext], PortfolioSnapshot], ToolRegistry | None]


@dataclass
class StepReport:
    as_of: datetime
    now: datetime
    snapshot: PortfolioSnapshot
    result: CycleResult
    skipped: dict[str, str]
    contexts: list[SymbolContext]
    estimate: dict[str, float]
    events_written: int
    orders: list[OrderState] = field(default_factory=list)
    flattened: list[OrderState] = field(default_factory=list)
    trips: list[str] = field(default_factory=list)
    blocked: str | None = None  # why new risk was refused at send time
    budget: BudgetCheck | None = None  # the pre-run gate's figures (and why the run made no model call)


def fund(ledger: EventLog, cash: float, *, source: str, run_id: str, mode: Mode, now: datetime) -> bool:
    """The one funding rule: an empty ledger starts with a deposit of the account's cash."""
    if any(True for _ in ledger.events(types=[EventType.DEPOSIT.value])):
        return False
    event_id = hashlib.sha256(b"deposit|initial").hexdigest()[:32]
    ledger.emit(Event(type=EventType.DEPOSIT, run_id=run_id, mode=mode, as_of=now, payload={"amount": cash, "source": source}, event_id=event_id))
    return True


def opening_cash(broker: Broker | None, mode: Mode, initial_cash: float) -> tuple[float, str]:
    """What an empty ledger is funded with, and from where: the broker's cash when trading, else `initial_cash`."""
    if broker is not None and mode != Mode.VALIDATION:
        return broker.account().cash, broker.name
    return initial_cash, "initial"


def advance_simulation(broker: SimulatedBroker, executor: Executor, bars: pl.DataFrame) -> int:
    """The simulated broker lives through the bars since its last one (fills at their opens, brackets)."""
    new = bars.filter(pl.col("ts") > broker.now) if broker.now is not None else bars.tail(0)
    fills = 0
    for frame in new.sort("ts", "symbol").partition_by("ts", maintain_order=True):
        fills += executor.record_fills(broker.on_bar({r["symbol"]: r for r in frame.iter_rows(named=True)}))
    if broker.now is None and not bars.is_empty():
        broker.now = bars["ts"].max()  # type: ignore[assignment]  # a new simulation starts at the decision bar
    return fills


def _trade_manager(broker: Broker | None, ledger: Ledger, mode: Mode, run_id: str, now: datetime) -> TradeManager | None:
    """On Alpaca (paper/live) the trade manager owns the brackets' exits (`trading.trade_manager`)."""
    from trading.accounts import SubAccount
    from trading.brokers.alpaca import AlpacaBroker
    from trading.brokers.split import PipelineBroker

    if isinstance(broker, PipelineBroker) and isinstance(ledger, SubAccount):  # split: the manager reads the whole ledger
        broker, ledger = broker.broker, ledger.parent
    if not isinstance(broker, AlpacaBroker) or mode not in (Mode.PAPER, Mode.LIVE):
        return None
    from trading.trade_manager import TradeManager  # alpaca-py's stream: loaded only where it is used

    return TradeManager(broker, ledger, run_id=run_id, mode=mode, clock=lambda: now)


def last_marks(bars: pl.DataFrame) -> dict[str, float]:
    return {r["symbol"]: r["close"] for r in bars.sort("ts").group_by("symbol").agg(pl.col("close").last()).iter_rows(named=True)}


def trading_step(
    *,
    ledger: Ledger,
    broker: Broker | None,
    decider: DecisionPipeline,
    strategy: Strategy[Any],
    params: Any,
    bars: pl.DataFrame,
    as_of: datetime,
    now: datetime,
    mode: Mode,
    run_id: str,
    initial_cash: float = 100_000.0,
    spent_today: float | None = None,
    tokens_today: int | None = None,
    per_call_costs: list[float] | None = None,
    spent_month: float | None = None,
    tools_for: ToolsFor | None = None,
    record_all: bool = True,
    headlines: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    account: AccountBook | None = None,
    frames: Mapping[str, pl.DataFrame] | None = None,
) -> StepReport:
    """One step on `bars` (every symbol, up to `as_of`): see the module docstring for the order.
    `spent_today`, `tokens_today`, `per_call_costs`, `spent_month`: what earlier runs spent on the
    decision bar's day and month; None: as the ledger's cost events say (a session's earlier bars too).
    `account`: the whole account when pipelines share it (its limits after the pipeline's; `trading.accounts`).
    `frames`: bars of other timeframes the graph's nodes read (`trading.context.read_frames`); a timeframe
    not given comes from `bars` (the same, or resampled from 1m); unread when no node reads one."""
    limits = decider.config.limits
    past = bars.filter(pl.col("ts") <= as_of)
    trading = broker is not None and mode != Mode.VALIDATION
    # 1. Funding, and the simulated market up to the decision bar.
    account_cash, source = opening_cash(broker, mode, initial_cash)
    fund(ledger, account_cash, source=source, run_id=run_id, mode=mode, now=now)
    manager = _trade_manager(broker, ledger, mode, run_id, now)
    pipeline = getattr(broker, "pipeline_id", None)  # a split account: release this pipeline's exits only
    release = (lambda symbol: manager.release(symbol, "strategy exit", pipeline=pipeline)) if manager is not None else None
    executor = Executor(broker, ledger, mode=mode, run_id=run_id, now=now, limits=limits, before_exit=release) if trading and broker is not None else None
    safety = executor.safety if executor is not None else Safety(ledger, limits, now, run_id, mode)
    if executor is not None and isinstance(broker, SimulatedBroker):
        advance_simulation(broker, executor, past)
    # 2. Reconcile (fail closed: ReconciliationFailed before anything is sent) and mark.
    marks = last_marks(past)
    if account is not None:
        account.mark(marks)
    portfolio = replay_portfolio(ledger)
    if executor is not None:
        report = executor.reconcile({s: q for s, q in portfolio.positions.items() if q})
        cash, equity, positions = float(report["cash"]), float(report["equity"]), dict(report["positions"])
    else:
        cash, equity, positions = portfolio.cash, portfolio.equity(marks), {s: q for s, q in portfolio.positions.items() if q}
        safety.mark({"ok": True, "source": "ledger", "cash": cash, "equity": equity, "positions": positions})
    # 3. Breakers on this mark; the flatten when the window ends.
    trips = safety.check_breakers(equity)
    flattened = executor.flatten_if_due() if executor is not None else []
    state = safety.state()
    snapshot = PortfolioSnapshot(
        cash=cash,
        equity=equity,
        positions=positions,
        prices=marks,
        start_of_day_equity=state.session_open_equity,
        peak_equity=state.peak_equity,
        trades_today=state.trades_today,
    )
    # 4. Point-in-time contexts (with a reflection node: lessons of the closes known by now first).
    if spent_today is None or tokens_today is None or per_call_costs is None or spent_month is None:
        spent = project(ledger)  # one pass, caught up: the day's and the month's spend by decision bar
        day_spent, day_costs = spent.spent_on(as_of.date())
        spent_today = day_spent if spent_today is None else spent_today
        tokens_today = spent.tokens_on(as_of.date()) if tokens_today is None else tokens_today
        per_call_costs = day_costs if per_call_costs is None else per_call_costs
        spent_month = spent_in_month(spent.spent, as_of.date()) if spent_month is None else spent_month
    memory = memory_of(decider)
    recalled = None
    if memory is not None:
        # The lessons' model calls pass the pre-run gate first (a refusal: the rules write them, nothing asked).
        lessons = decider.estimate([], per_call_costs, lessons=len(pending_lessons(ledger, memory, as_of)))
        refused = decider.budget_gate(lessons, day=as_of.date(), spent_today=spent_today, spent_month=spent_month).reason is not None
        recalled = remember(ledger, memory, as_of=as_of, run_id=run_id, mode=mode, strategy=strategy.name, prices=decider.prices,
                            budget=decider.config.budget, spent_today=spent_today, tokens_today=tokens_today, by_rules=refused)  # fmt: skip
        spent_today, tokens_today, spent_month = spent_today + recalled.usd, tokens_today + recalled.tokens, spent_month + recalled.usd
    needs = frame_needs(decider.graph.agents.values())  # empty: no other timeframe is read or built
    given = {tf: frames[tf] for tf in needs if frames is not None and tf in frames}
    extra = {**frames_from(past, [tf for tf in needs if tf not in given]), **given} if needs else None
    contexts, skipped = build_contexts(past, strategy, params, as_of, snapshot, headlines, recalled.reflections if recalled else None, extra, needs)
    estimate = decider.estimate(contexts, per_call_costs)
    # 5. The gate before any model call, on what this step spent already (reflections) too; then the pipeline.
    budget = decider.budget_gate(estimate, day=as_of.date(), spent_today=spent_today, spent_month=spent_month)
    sink = MemorySink()
    tools = tools_for(contexts, snapshot) if tools_for is not None else None
    result = decider.run(contexts, snapshot, as_of=as_of, run_id=run_id, mode=mode, sink=sink, spent_today=spent_today, tokens_today=tokens_today,
                         tools=tools, skipped=skipped, spent_month=spent_month, budget=budget, account=account)  # fmt: skip
    executed = {d.symbol for d in result.executed()}
    events = sink.events if record_all else [e for e in sink.events if e.type != EventType.SIGNAL or e.symbol in executed]
    written = ledger.append_many(events)
    # 6. The executor (after a flatten, exits are left to it; entries outside the window are refused).
    orders: list[OrderState] = []
    blocked = None
    if executor is not None and broker is not None:
        orders = executor.execute(result.decisions, broker.positions())
        blocked = executor.blocked
        if manager is not None and orders:
            manager.sync_all()  # entries that filled already get their exits now, not at the next pass
    return StepReport(as_of, now, snapshot, result, skipped, contexts, estimate, written, orders, flattened, trips, blocked, budget)

