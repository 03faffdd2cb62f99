"""One decision cycle: contexts -> the pipeline's graph (by default analyst -> hard limits -> soft risk
review -> validator) -> decisions.

The graph is a LangGraph graph compiled from the config (trading/graph), one checkpointed thread
per (cycle, symbol); its hard limits node is where every thread waits while the limits run as code.

- A symbol without a signal is decided HOLD at once: no agent runs, no model is called.
- Analysts (and later the reviewers) run concurrently, at most `max_in_flight` at a time.
- Hard limits run in symbol order on a running portfolio, so two buys in one sector cannot together
  pass a cap each would pass alone. A hard rejection skips the soft review (no model cost).
- The pre-run budget gate (`budget_gate`, checked by the trading step before every run, decide runs
  and paper sessions alike): a run whose worst case would take the day or the month over its budget
  makes no model call; every signalled symbol is HOLD saying why and an intervention event records it.
- A budget that would be exceeded mid-run (each call is checked too) stops the cycle cleanly: symbols
  not yet judged are HOLD, and an intervention event says why.
Every step is an event on the sink; the ledger persists them.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trading.accounts import AccountBook
from trading.agents.base import AgentRun, Role
from trading.agents.cache import CacheMode, ResponseCache
from trading.agents.llm import FormatMemory
from trading.agents.registry import AgentSpec, BuildEnv, expect_roles, fill_model_defaults
from trading.agents.rules import reduces_position
from trading.agents.tools import ToolRegistry
from trading.context import SymbolContext
from trading.cost import (
    Budget,
    BudgetCheck,
    BudgetExceeded,
    CostTracker,
    PriceTable,
    estimate_call_cost,
    estimate_run_cost,
    pre_run_check,
)
from trading.events import Event, EventSink, EventType, MemorySink
from trading.graph import (
    CycleInputs,
    GraphSpec,
    PipelineGraph,
    check_checkpoint,
    default_graph,
    open_checkpointer,
    thread_id,
)
from trading.models import (
    Action,
    Decision,
    Mode,
    PortfolioSnapshot,
    RiskAssessment,
    Side,
    TradeProposal,
    ValidationResult,
    Verdict,
)
from trading.risk import RiskLimits, assess
from trading.sanity import SanityLimits, StrategyLevels, price_sanity

R = TypeVar("R")
LESSON_PROMPT_CHARS = 2_000  # a lesson's prompt: the closed trade's facts, its opening rationale, the instructions
NOTES_CHARS = 1_500  # what the nodes before a model node add to its prompt (analysts' and researchers' notes)
MEMORY_CHECKPOINT = "memory"  # `checkpoint: memory` in a pipeline file: no checkpoint file, whatever the caller's default


class ScreenerSection(BaseModel):
    """The pipeline file's `screener:` section: the QUANTLAKE_SCREENER* settings' fields (lake/screener.py).
    A field the section gives wins over its setting; one it leaves out keeps the setting (`over`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="Decide runs with no explicit symbols decide only the day's chosen symbols.")
    lookback: int = Field(20, ge=1, description="Sessions of the liquidity average and the momentum.")
    min_dollar_volume: float = Field(0.0, ge=0)
    min_price: float = Field(0.0, ge=0)
    max_price: float = Field(math.inf, gt=0)
    max_gap: float | None = Field(None, ge=0, description="|open / prior close - 1| at most (needs the day's open).")
    min_momentum: float | None = None
    max_symbols: int | None = Field(None, ge=1, description="Keep the best momentum scores.")

    @model_validator(mode="after")
    def _price_range(self) -> ScreenerSection:
        if self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} is above max_price {self.max_price}")
        return self

    def over(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """`defaults` (the settings' values by these field names) with the fields this section sets."""
        return {**defaults, **{name: getattr(self, name) for name in self.model_fields_set}}


class PipelineConfig(BaseModel):
    """A pipeline as a trader writes it in config: which agents, limits, budget, concurrency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    analyst: AgentSpec = AgentSpec(type="rules_analyst")
    risk: AgentSpec = AgentSpec(type="rules_risk")
    validator: AgentSpec = AgentSpec(type="rules_validator")
    limits: RiskLimits = Field(default_factory=RiskLimits)
    sanity: SanityLimits = Field(default_factory=SanityLimits)
    budget: Budget = Field(default_factory=Budget)
    prices: dict[str, tuple[float, float]] | None = Field(None, description="USD per 1M tokens (input, output) per model.")
    default_price: tuple[float, float] | None = Field(None, description="USD per 1M tokens for models not in prices; None: they run unpriced.")
    max_in_flight: int = Field(8, ge=1, le=256, description="Agent calls running at once.")
    fractional: bool = False
    graph: GraphSpec | None = Field(None, description="The pipeline as a graph of catalog nodes; None: analyst -> hard limits -> risk -> validator.")
    screener: ScreenerSection | None = Field(None, description="The screener's filters and switch; None: the QUANTLAKE_SCREENER* settings.")
    checkpoint: str | None = Field(
        None, description="Graph checkpoints: a SQLite file, a postgresql:// URL, or 'memory' (one cycle); None: the caller's default (decide runs: the ledger's store: a file beside a SQLite ledger, a PostgreSQL ledger's database)."
    )

    @model_validator(mode="after")
    def _one_shape(self) -> PipelineConfig:
        named = sorted({"analyst", "risk", "validator"} & self.model_fields_set)
        if self.graph is not None and named:
            raise ValueError(f"give either `graph` or the {named} keys, not both")
        return self

    def graph_spec(self) -> GraphSpec:
        if self.graph is not None:
            return self.graph
        return default_graph(self.analyst.model_dump(), self.risk.model_dump(), self.validator.model_dump())


@dataclass
class CycleResult:
    run_id: str
    as_of: datetime
    decisions: list[Decision]
    costs: dict[str, Any]
    interventions: list[str] = field(default_factory=list)
    model_calls: int = 0

    def executed(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == Verdict.EXECUTE]


class DecisionPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        cache: ResponseCache | None = None,
        formats: FormatMemory | None = None,
        checkpoint: str | None = None,
        thread_key: str | None = None,
    ) -> None:
        """`formats`: the answer formats servers accepted before (e.g. `FormatMemory.from_events` of the ledger).
        `checkpoint`: where threads are checkpointed when the config does not say (see trading/graph/checkpoint.py);
        the config's `memory` keeps them in memory whatever the default. `thread_key`: what names the cycle's
        threads instead of the run id (a re-executed Dagster run has a new run id but is the same cycle)."""
        self.config = config
        self.prices = PriceTable(config.prices, config.default_price)
        if config.graph is None:
            expect_roles({Role.ANALYST: config.analyst, Role.RISK: config.risk, Role.VALIDATOR: config.validator})
        self.graph = PipelineGraph(config.graph_spec(), BuildEnv(prices=self.prices, cache=cache, formats=formats), config.name)
        chosen = config.checkpoint or checkpoint
        self.checkpoint = None if chosen == MEMORY_CHECKPOINT else chosen
        self.thread_key = thread_key
        # A replay answers from the cache and never asks a model: it spends nothing, so the gate lets it run.
        self.replay = cache is not None and cache.mode == CacheMode.REPLAY
        check_checkpoint(self.checkpoint)

    # The default graph's agents by their old names (a custom graph may have none of them).
    @property
    def analyst(self) -> Any:
        return self.graph.agents.get("analyst")

    @analyst.setter
    def analyst(self, agent: Any) -> None:
        self.graph.agents["analyst"] = agent

    @property
    def risk(self) -> Any:
        return self.graph.agents.get("risk")

    @property
    def validator(self) -> Any:
        return self.graph.agents.get("validator")

    def estimate(self, contexts: Sequence[SymbolContext], recent_cost_per_call: Sequence[float] = (), lessons: int = 0) -> dict[str, Any]:
        """Before a run: at most one call (or a debater's rounds) per model node per signalled symbol, priced
        from recent runs' mean cost per call, else from the prompt sizes and each node's output cap; and
        `lessons`, the reflection lessons the run has still to ask a model for (`lesson_estimate`)."""
        signalled = [c for c in contexts if c.wants is not None]
        model_nodes = [a for a in self.graph.agents.values() if hasattr(a, "caller")]
        calls = len(signalled) * sum(int(getattr(a, "calls_per_symbol", 1)) for a in model_nodes)
        taught = self.lesson_estimate(lessons)
        if not calls:
            return {"model_calls_max": taught["calls"], "usd": taught["usd"], "usd_worst_case": taught["usd_worst_case"], "lesson_calls": taught["calls"]}
        callers = [a.caller for a in model_nodes]
        prompt_chars = max(self.prompt_chars(c) for c in signalled)
        by_prompt = sum(estimate_call_cost(self.prices, c.settings.model, prompt_chars, c.settings.max_output_tokens) for c in callers) / len(callers)
        estimate: dict[str, Any] = {"model_calls_max": calls, "usd": estimate_run_cost(recent_cost_per_call, calls, by_prompt)}
        estimate |= worst_case(model_nodes, self.prices, prompt_chars, len(signalled))
        return estimate | {
            "model_calls_max": calls + taught["calls"],
            "usd": estimate["usd"] + taught["usd"],
            "usd_worst_case": estimate["usd_worst_case"] + taught["usd_worst_case"],
            "lesson_calls": taught["calls"],
        }

    def lesson_estimate(self, lessons: int) -> dict[str, Any]:
        """`lessons` reflection lessons asked of the reflection node's model (a closed trade each, at most one
        a symbol a run): each a `LESSON_PROMPT_CHARS` prompt at the model's output cap, on the first provider
        and in the worst case (every provider of its chain); nothing without a model on that node."""
        from trading.agents.reflection import memory_of

        caller = getattr(memory_of(self), "caller", None)
        if not lessons or caller is None:
            return {"calls": 0, "usd": 0.0, "usd_worst_case": 0.0}
        chain = caller.estimate_call(self.prices, LESSON_PROMPT_CHARS)
        return {"calls": lessons, "usd": chain.first_usd * lessons, "usd_worst_case": chain.worst_usd * lessons}

    def prompt_chars(self, ctx: SymbolContext) -> int:
        """A model node's prompt for `ctx` at most: its context (the stored lessons, `reflections`, among it),
        the notes of the nodes before it, and with a reflection node the lessons again, as that node puts
        them in the notes every later node reads (its very output for `ctx`)."""
        from trading.agents.reflection import memory_of  # the reflection node is built on this module's graph

        chars = len(json.dumps(ctx.prompt_view(), default=str)) + NOTES_CHARS
        if (memory := memory_of(self)) is not None and ctx.reflections:
            chars += len(json.dumps(memory.research(ctx, {}, cast(AgentRun, None)), default=str))  # reads `ctx` only
        return chars

    def budget_gate(self, estimate: dict[str, Any], *, day: date, spent_today: float, spent_month: float) -> BudgetCheck:
        """The pre-run gate on this run's `estimate`: its worst case against what is left of the day's and
        the month's budgets (`spent_*`: every earlier run's spend on the decision bar's day and month).
        A `reason` means `run(..., budget=check)` makes no model call; a replay or a run with no model
        call to make is never blocked (it spends nothing), though the figures are kept."""
        worst = float(estimate.get("usd_worst_case", estimate["usd"]))
        check = pre_run_check(self.config.budget, worst, day=day, spent_today=spent_today, spent_month=spent_month)
        return replace(check, reason=None) if self.replay or not estimate["model_calls_max"] else check

    def model_calls(self) -> int:
        return sum(getattr(getattr(a, "caller", None), "calls", 0) for a in self.graph.agents.values())

    def run(
        self,
        contexts: Sequence[SymbolContext],
        snapshot: PortfolioSnapshot,
        *,
        as_of: datetime,
        run_id: str | None = None,
        mode: Mode = Mode.VALIDATION,
        sink: EventSink | None = None,
        spent_today: float = 0.0,
        tokens_today: int = 0,
        tools: ToolRegistry | None = None,
        skipped: dict[str, str] | None = None,
        spent_month: float | None = None,
        budget: BudgetCheck | None = None,
        account: AccountBook | None = None,
    ) -> CycleResult:
        """`budget`: the pre-run gate's check (`budget_gate`); with a reason, every signalled symbol is HOLD
        with it and no model is asked (the cycle still records its decisions and its zero cost). `account`: the
        whole account when pipelines share it (`trading.accounts`): its limits are checked after this pipeline's."""
        run_id = run_id or uuid.uuid4().hex
        calls_before = self.model_calls()
        costs = CostTracker(self.prices, self.config.budget, spent_today=spent_today, tokens_today=tokens_today, spent_month=spent_month)
        run = AgentRun(run_id=run_id, mode=mode, sink=sink or MemorySink(), costs=costs, tools=tools)
        stop = _Stop()
        decisions: dict[str, Decision] = {}

        def hold(ctx: SymbolContext, why: str) -> None:
            decisions[ctx.symbol] = _decision(run_id, ctx, Verdict.HOLD, rationale=why)

        for symbol, why in sorted((skipped or {}).items()):
            run.sink.emit(Event(type=EventType.DECISION, run_id=run_id, mode=mode, symbol=symbol, as_of=as_of, payload={"verdict": "HOLD", "rationale": why}))
        reason = budget.reason if budget is not None else None
        blocked = f"budget: {reason}" if reason is not None else None
        if blocked is not None:
            stop.interventions.append(blocked)
            detail = {"kind": "budget", "reason": reason, "detail": "before the run: no model call made"}
            run.sink.emit(Event(type=EventType.INTERVENTION, run_id=run_id, mode=mode, as_of=as_of, payload=detail))
        judged = []
        for ctx in sorted(contexts, key=lambda c: c.symbol):
            if ctx.wants is None:
                hold(ctx, "no signal")
            elif blocked is not None:
                hold(ctx, blocked)
            else:
                run.emit(EventType.SIGNAL, ctx, {"wants": ctx.wants, "signal": ctx.signal})
                judged.append(ctx)

        inputs = CycleInputs(contexts={c.symbol: c for c in judged}, run=run)
        # Sorted keys: the same book is the same key in every process (marks come in group_by's order).
        book_key = json.dumps(snapshot.model_dump(mode="json"), sort_keys=True)
        durable = "sync" if self.checkpoint else "exit"  # in memory, nothing outlives the cycle anyway
        with open_checkpointer(self.checkpoint) as saver:
            graph = self.graph.compile(saver)
            threads = {c.symbol: {"configurable": {"thread_id": thread_id(self.config.name, self.thread_key or run_id, c, book_key), "quantlake": inputs}} for c in judged}
            # 1. The graph up to the hard limits (analysts, research), concurrently.
            first = self._parallel(judged, lambda c: self._to_limits(graph, c, threads[c.symbol], durable), stop, run)
            # 2. Hard limits, as code, in order, on a running portfolio: whatever the graph proposed.
            book = _Book(snapshot)
            passed: list[SymbolContext] = []
            for ctx in judged:
                state, at_limits = first.get(ctx.symbol, ({}, False))
                if not state.get("proposal"):
                    hold(ctx, stop.reason or "analyst gave no proposal")
                    continue
                proposal = TradeProposal.model_validate(state["proposal"])
                run.emit(EventType.PROPOSAL, ctx, state["proposal"])
                if proposal.action == Action.HOLD:
                    hold(ctx, f"analyst: {proposal.rationale}")
                    continue
                if not at_limits:
                    hold(ctx, "the graph ended before the hard limits")
                    continue
                rejected = self._hard(ctx, proposal, book, run, account)
                if isinstance(rejected, str):
                    inputs.hard[ctx.symbol] = {"hard": RiskAssessment(symbol=ctx.symbol, approved=False, quantity=0.0, hard_violations=[rejected]).model_dump(mode="json")}
                    hold(ctx, rejected)
                    continue
                proposal, verdict = rejected
                inputs.hard[ctx.symbol] = {"proposal": proposal.model_dump(mode="json"), "hard": verdict.model_dump(mode="json")}
                passed.append(ctx)
            # 3. The rest of the graph (soft review, validation), concurrently; it can only cut.
            waiting = [c for c in judged if c.symbol in inputs.hard]
            finals = self._parallel(waiting, lambda c: self._finish(graph, threads[c.symbol], durable), stop, run)
        for ctx in passed:
            if ctx.symbol not in finals:
                hold(ctx, stop.reason or "review did not finish")
                continue
            state = finals[ctx.symbol]
            proposal = TradeProposal.model_validate(state["proposal"])
            quantity = RiskAssessment.model_validate(state["hard"]).quantity
            if state.get("soft"):
                soft = RiskAssessment.model_validate(state["soft"])
                run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "soft", **state["soft"]})
                if not soft.approved or soft.quantity <= 0:
                    hold(ctx, "risk review: " + "; ".join(soft.reasons or ["rejected"]))
                    continue
                quantity = soft.quantity
            if state.get("validation"):
                validation = ValidationResult.model_validate(state["validation"])
                run.emit(EventType.VALIDATION, ctx, state["validation"])
                if not validation.valid:
                    hold(ctx, "validation: " + "; ".join(validation.issues))
                    continue
            decisions[ctx.symbol] = _decision(
                run_id, ctx, Verdict.EXECUTE, proposal=proposal, quantity=quantity, rationale=proposal.rationale, size=_uncut_size(ctx, proposal, quantity)
            )
        ordered = [decisions[s] for s in sorted(decisions)]
        for d in ordered:
            run.sink.emit(Event(type=EventType.DECISION, run_id=run_id, mode=mode, symbol=d.symbol, as_of=d.decided_at, payload=d.model_dump(mode="json")))
        summary = costs.summary()
        run.sink.emit(Event(type=EventType.COST, run_id=run_id, mode=mode, as_of=as_of, payload={"scope": "run", **summary}))
        return CycleResult(run_id, as_of, ordered, summary, stop.interventions, self.model_calls() - calls_before)

    def _to_limits(self, graph: Any, ctx: SymbolContext, thread: Any, durability: str) -> tuple[dict[str, Any], bool]:
        """Runs (or resumes) the symbol's thread up to the hard limits: (state, whether it waits there).
        A thread a dead cycle left behind continues from its last node; one past the limits stays."""
        snap = graph.get_state(thread)
        if not snap.values:
            graph.invoke({"symbol": ctx.symbol, "notes": {}}, thread, durability=durability)
        elif snap.next and self.graph.hard_id not in snap.next and not snap.values.get("hard"):
            graph.invoke(None, thread, durability=durability)
        snap = graph.get_state(thread)
        return dict(snap.values), self.graph.hard_id in snap.next or bool(snap.values.get("hard"))

    def _finish(self, graph: Any, thread: Any, durability: str) -> dict[str, Any]:
        snap = graph.get_state(thread)
        return dict(graph.invoke(None, thread, durability=durability)) if snap.next else dict(snap.values)

    def _hard(self, ctx: SymbolContext, proposal: TradeProposal, book: _Book, run: AgentRun, account: AccountBook | None = None) -> str | tuple[TradeProposal, RiskAssessment]:
        """Price sanity, sizing and the hard limits on the running book: the sized proposal and verdict, or why not."""
        own = StrategyLevels(ctx.close, *(_level(ctx.signal.get(k)) for k in ("stop", "target1", "target2")))
        last = book.snapshot.prices.get(ctx.symbol) or ctx.close  # the market's mark, else the decision bar's close
        insane = price_sanity(proposal, last, ctx.features.get("atr_14"), self.config.sanity, own)
        if insane:
            run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "sanity", "approved": False, "hard_violations": insane})
            return "price sanity: " + "; ".join(insane)
        proposal = self._with_quantity(ctx, proposal, book.snapshot)
        verdict = assess(proposal, book.snapshot, self.config.limits, price=ctx.close, fractional=self.config.fractional)
        if not verdict.approved:
            run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "hard", **verdict.model_dump(mode="json")})
            return "hard limits: " + "; ".join(verdict.hard_violations or verdict.reasons)
        if account is not None:  # the account as a whole, over every pipeline's book: it can only cut
            whole = account.check(proposal, verdict.quantity, ctx.close, fractional=self.config.fractional)
            if not whole.approved:
                run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "account", **whole.model_dump(mode="json")})
                return "account limits: " + "; ".join(whole.hard_violations or whole.reasons)
            if whole.quantity < verdict.quantity:
                cut = [*verdict.hard_violations, *(f"account: {v}" for v in whole.hard_violations)]
                verdict = verdict.model_copy(update={"quantity": whole.quantity, "hard_violations": cut})
        book.apply(ctx.symbol, proposal.action, verdict.quantity, ctx.close)
        return proposal, verdict

    def _with_quantity(self, ctx: SymbolContext, proposal: TradeProposal, snapshot: PortfolioSnapshot) -> TradeProposal:
        """Exits close the position; entries take the strategy's size (share of cash), else size to the limits."""
        if reduces_position(proposal, ctx.position):
            return proposal.model_copy(update={"quantity": abs(ctx.position)})
        size = ctx.signal.get("size")
        if size is None or not math.isfinite(size) or size <= 0:
            return proposal.model_copy(update={"quantity": None})
        quantity = size * max(snapshot.cash, 0.0) / ctx.close
        return proposal.model_copy(update={"quantity": quantity if self.config.fractional else float(math.floor(quantity))})

    def _parallel(self, items: list[SymbolContext], work: Callable[[SymbolContext], R], stop: _Stop, run: AgentRun) -> dict[str, R]:
        def guarded(ctx: SymbolContext) -> tuple[str, R | None]:
            if stop.is_set():
                return ctx.symbol, None
            try:
                return ctx.symbol, work(ctx)
            except BudgetExceeded as exc:
                if stop.trip(f"budget: {exc}"):
                    run.sink.emit(
                        Event(type=EventType.INTERVENTION, run_id=run.run_id, mode=run.mode, symbol=ctx.symbol, as_of=ctx.as_of, payload={"kind": "budget", "detail": str(exc)})
                    )
                return ctx.symbol, None

        if not items:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.config.max_in_flight, len(items))) as pool:
            results = list(pool.map(guarded, items))
        return {symbol: value for symbol, value in results if value is not None}


def worst_case(model_nodes: Sequence[Any], prices: PriceTable, prompt_chars: int, symbols: int) -> dict[str, Any]:
    """The estimate's worst case over each node's provider chain (every provider asked and charged in
    turn), which provider is the costliest per node, and the providers with no price (not in the USD)."""
    worst, costliest, unpriced = 0.0, {}, set()
    for node in model_nodes:
        chain = node.caller.estimate_call(prices, prompt_chars) if hasattr(node.caller, "estimate_call") else None
        if chain is None:
            continue
        worst += chain.worst_usd * symbols * int(getattr(node, "calls_per_symbol", 1))
        costliest[str(getattr(node, "name", "model"))] = chain.costliest
        unpriced.update(chain.unpriced)
    return {"usd_worst_case": worst, "costliest_providers": costliest, "unpriced_providers": sorted(unpriced)}


def _level(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _uncut_size(ctx: SymbolContext, proposal: TradeProposal, quantity: float) -> float | None:
    """The strategy's size for an entry that no limit or review cut: the broker may size it at the
    fill by the backtest's rule (OrderRequest.size); a cut entry keeps its fixed quantity."""
    size = ctx.signal.get("size")
    if reduces_position(proposal, ctx.position) or proposal.quantity is None or quantity < proposal.quantity:
        return None
    return float(size) if size is not None and math.isfinite(size) and 0 < size <= 1 else None


class _Stop:
    """Set once when the cycle must stop (budget); later work returns at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.interventions: list[str] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def trip(self, reason: str) -> bool:
        with self._lock:
            if self._event.is_set():
                return False
            self.reason = reason
            self.interventions.append(reason)
            self._event.set()
            return True


class _Book:
    """The snapshot as it will be once this cycle's approved trades fill at the decision price."""

    def __init__(self, snapshot: PortfolioSnapshot) -> None:
        self.snapshot = snapshot

    def apply(self, symbol: str, action: Action, quantity: float, price: float) -> None:
        signed = quantity if action == Action.BUY else -quantity
        s = self.snapshot
        positions = {**s.positions, symbol: s.positions.get(symbol, 0.0) + signed}
        self.snapshot = s.model_copy(
            update={
                "positions": {k: v for k, v in positions.items() if v != 0},
                "cash": s.cash - signed * price,
                "prices": {**s.prices, symbol: price},
                "trades_today": s.trades_today + 1,
            }
        )


def _decision(
    run_id: str,
    ctx: SymbolContext,
    verdict: Verdict,
    *,
    proposal: TradeProposal | None = None,
    quantity: float = 0.0,
    rationale: str = "",
    size: float | None = None,
) -> Decision:
    levels: dict[str, Any] = {}
    side = None
    if proposal is not None and verdict == Verdict.EXECUTE:
        side = Side.BUY if proposal.action == Action.BUY else Side.SELL
        levels = {"entry": proposal.entry, "stop": proposal.stop, "target1": proposal.target1, "target2": proposal.target2}
    return Decision(
        run_id=run_id, strategy=ctx.strategy, symbol=ctx.symbol, decided_at=ctx.as_of, verdict=verdict, side=side, quantity=quantity, size=size, rationale=rationale, **levels
    )


def load_pipeline_config(
    path: str | Path | None = None,
    *,
    llm_model: str | None = None,
    llm_base_url: str | None = None,
    daily_budget_usd: float | None = None,
    daily_budget_tokens: int | None = None,
    monthly_budget_usd: float | None = None,
) -> PipelineConfig:
    """A pipeline from a JSON or YAML file (or the rule-based default), with quick overrides.

    `llm_model` / `llm_base_url` fill in what the file leaves open (`fill_model_defaults`); a bad file or field raises
    `ValueError` naming the file and the field.
    """
    raw: dict[str, Any] = {}
    if path:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as exc:
            raise ValueError(f"pipeline config {file}: {exc.strerror}") from None
        import yaml  # JSON is YAML too

        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"pipeline config {file}: expected a mapping at the top, got {type(loaded).__name__}")
        raw = loaded
    raw = fill_model_defaults(raw, model=llm_model, base_url=llm_base_url)
    if daily_budget_usd is not None:
        raw["budget"] = {**raw.get("budget", {}), "per_day": daily_budget_usd}
    if daily_budget_tokens is not None:
        raw["budget"] = {**raw.get("budget", {}), "tokens_per_day": daily_budget_tokens}
    if monthly_budget_usd is not None:
        raw["budget"] = {**raw.get("budget", {}), "per_month": monthly_budget_usd}
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
        raise ValueError(f"pipeline config {path or '(default)'}: {fields}") from None
