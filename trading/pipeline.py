"""One decision cycle: contexts -> analyst -> hard limits -> soft risk review -> validator -> decisions.

- A symbol without a signal is decided HOLD at once: no agent runs, no model is called.
- Analysts (and later the reviewers) run concurrently, at most `max_in_flight` at a time.
- Hard limits run in symbol order on a running portfolio, so two buys in one sector cannot together
  pass a cap each would pass alone. A hard rejection skips the soft review (no model cost).
- A budget that would be exceeded stops the cycle cleanly: symbols not yet judged are HOLD, and an
  intervention event says why.
Every step is an event on the sink; the ledger persists them.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trading.agents.base import AgentRun, Role
from trading.agents.cache import ResponseCache
from trading.agents.llm import FormatMemory
from trading.agents.registry import AgentSpec, BuildEnv, build_agent, fill_model_defaults
from trading.agents.rules import reduces_position
from trading.agents.tools import ToolRegistry
from trading.context import SymbolContext
from trading.cost import (
    Budget,
    BudgetExceeded,
    CostTracker,
    PriceTable,
    estimate_call_cost,
    estimate_run_cost,
)
from trading.events import Event, EventSink, EventType, MemorySink
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
    def __init__(self, config: PipelineConfig, *, cache: ResponseCache | None = None, formats: FormatMemory | None = None) -> None:
        """`formats`: the answer formats servers accepted before (e.g. `FormatMemory.from_events` of the ledger)."""
        self.config = config
        self.prices = PriceTable(config.prices, config.default_price)
        env = BuildEnv(prices=self.prices, cache=cache, formats=formats)
        self.analyst = build_agent(config.analyst, Role.ANALYST, env)
        self.risk = build_agent(config.risk, Role.RISK, env)
        self.validator = build_agent(config.validator, Role.VALIDATOR, env)

    def estimate(self, contexts: Sequence[SymbolContext], recent_cost_per_call: Sequence[float] = ()) -> dict[str, float]:
        """Before a run: at most one call per model agent per signalled symbol, priced from recent runs'
        mean cost per call, else from the prompt sizes and each agent's output cap."""
        signalled = [c for c in contexts if c.wants is not None]
        callers = [a.caller for a in (self.analyst, self.risk, self.validator) if hasattr(a, "caller")]
        calls = len(signalled) * len(callers)
        if not calls:
            return {"model_calls_max": 0, "usd": 0.0}
        prompt_chars = max(len(json.dumps(c.prompt_view(), default=str)) for c in signalled) + 1_500
        by_prompt = sum(estimate_call_cost(self.prices, c.settings.model, prompt_chars, c.settings.max_output_tokens) for c in callers) / len(callers)
        return {"model_calls_max": calls, "usd": estimate_run_cost(recent_cost_per_call, calls, by_prompt)}

    def model_calls(self) -> int:
        return sum(getattr(getattr(a, "caller", None), "calls", 0) for a in (self.analyst, self.risk, self.validator))

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
    ) -> CycleResult:
        run_id = run_id or uuid.uuid4().hex
        calls_before = self.model_calls()
        costs = CostTracker(self.prices, self.config.budget, spent_today=spent_today, tokens_today=tokens_today)
        run = AgentRun(run_id=run_id, mode=mode, sink=sink or MemorySink(), costs=costs, tools=tools)
        stop = _Stop()
        decisions: dict[str, Decision] = {}

        def hold(ctx: SymbolContext, why: str) -> None:
            decisions[ctx.symbol] = _decision(run_id, ctx, Verdict.HOLD, rationale=why)

        for symbol, why in sorted((skipped or {}).items()):
            run.sink.emit(Event(type=EventType.DECISION, run_id=run_id, mode=mode, symbol=symbol, as_of=as_of, payload={"verdict": "HOLD", "rationale": why}))
        judged = []
        for ctx in sorted(contexts, key=lambda c: c.symbol):
            if ctx.wants is None:
                hold(ctx, "no signal")
            else:
                run.emit(EventType.SIGNAL, ctx, {"wants": ctx.wants, "signal": ctx.signal})
                judged.append(ctx)

        # 1. Analysts, concurrently.
        proposals = self._parallel(judged, lambda c: self.analyst.propose(c, run), stop, run)
        # 2. Hard limits, in order, on a running portfolio.
        book = _Book(snapshot)
        hard: dict[str, tuple[TradeProposal, RiskAssessment]] = {}
        for ctx in judged:
            proposal = proposals.get(ctx.symbol)
            if proposal is None:
                hold(ctx, stop.reason or "analyst gave no proposal")
                continue
            run.emit(EventType.PROPOSAL, ctx, proposal.model_dump(mode="json"))
            if proposal.action == Action.HOLD:
                hold(ctx, f"analyst: {proposal.rationale}")
                continue
            own = StrategyLevels(ctx.close, *(_level(ctx.signal.get(k)) for k in ("stop", "target1", "target2")))
            last = book.snapshot.prices.get(ctx.symbol) or ctx.close  # the market's mark, else the decision bar's close
            insane = price_sanity(proposal, last, ctx.features.get("atr_14"), self.config.sanity, own)
            if insane:
                run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "sanity", "approved": False, "hard_violations": insane})
                hold(ctx, "price sanity: " + "; ".join(insane))
                continue
            proposal = self._with_quantity(ctx, proposal, book.snapshot)
            verdict = assess(proposal, book.snapshot, self.config.limits, price=ctx.close, fractional=self.config.fractional)
            if not verdict.approved:
                run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "hard", **verdict.model_dump(mode="json")})
                hold(ctx, "hard limits: " + "; ".join(verdict.hard_violations or verdict.reasons))
                continue
            book.apply(ctx.symbol, proposal.action, verdict.quantity, ctx.close)
            hard[ctx.symbol] = (proposal, verdict)
        # 3. Soft review and validation, concurrently; neither can enlarge what the hard limits allowed.
        reviewed = [c for c in judged if c.symbol in hard]

        def review(ctx: SymbolContext) -> tuple[RiskAssessment, ValidationResult | None]:
            proposal, verdict = hard[ctx.symbol]
            soft = self.risk.review(ctx, proposal, verdict, run)
            soft = soft.model_copy(update={"quantity": min(soft.quantity, verdict.quantity)})
            if not soft.approved or soft.quantity <= 0:
                return soft, None
            return soft, self.validator.validate(ctx, proposal, soft, run)

        judgements = self._parallel(reviewed, review, stop, run)
        for ctx in reviewed:
            proposal, _ = hard[ctx.symbol]
            if ctx.symbol not in judgements:
                hold(ctx, stop.reason or "review did not finish")
                continue
            soft, validation = judgements[ctx.symbol]
            run.emit(EventType.RISK_ASSESSMENT, ctx, {"stage": "soft", **soft.model_dump(mode="json")})
            if validation is None:
                hold(ctx, "risk review: " + "; ".join(soft.reasons or ["rejected"]))
                continue
            run.emit(EventType.VALIDATION, ctx, validation.model_dump(mode="json"))
            if not validation.valid:
                hold(ctx, "validation: " + "; ".join(validation.issues))
                continue
            decisions[ctx.symbol] = _decision(
                run_id, ctx, Verdict.EXECUTE, proposal=proposal, quantity=soft.quantity, rationale=proposal.rationale, size=_uncut_size(ctx, proposal, soft.quantity)
            )
        ordered = [decisions[s] for s in sorted(decisions)]
        for d in ordered:
            run.sink.emit(Event(type=EventType.DECISION, run_id=run_id, mode=mode, symbol=d.symbol, as_of=d.decided_at, payload=d.model_dump(mode="json")))
        summary = costs.summary()
        run.sink.emit(Event(type=EventType.COST, run_id=run_id, mode=mode, as_of=as_of, payload={"scope": "run", **summary}))
        return CycleResult(run_id, as_of, ordered, summary, stop.interventions, self.model_calls() - calls_before)

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
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
        raise ValueError(f"pipeline config {path or '(default)'}: {fields}") from None
