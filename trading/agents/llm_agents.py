"""The model-backed analyst, risk reviewer and validator; each falls back to its rule-based twin.

Models never choose a symbol or a quantity: the symbol is ours, the analyst's quantity comes from the
strategy's sizing, and the risk reviewer can only keep a fraction of what the hard limits allowed.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trading.agents.base import AgentRun
from trading.agents.chain import ProviderChain
from trading.agents.llm import ModelFailure
from trading.agents.rules import RuleAnalyst, RuleRiskReviewer, RuleValidator, level_issues
from trading.agents.tools import ToolRegistry
from trading.context import SymbolContext
from trading.events import EventType
from trading.models import RiskAssessment, TradeProposal, ValidationResult


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProposalOut(_Out):
    """The analyst's answer (OpenAI strict json_schema: every field required, nulls allowed)."""

    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float = Field(ge=0, le=1)
    rationale: str
    entry: float | None
    stop: float | None
    target1: float | None
    target2: float | None


class RiskOut(_Out):
    approve: bool
    keep_fraction: float = Field(ge=0, le=1, description="Share of the allowed quantity to keep (1 = all of it).")
    reasons: list[str]


class ValidationOut(_Out):
    valid: bool
    issues: list[str]


ANALYST_PROMPT = (
    "You are a disciplined equity trading analyst. A systematic strategy has signalled on the symbol below. "
    "Judge the signal with the data given (and the lookup tools, if offered) and answer with a proposal: "
    "action BUY, SELL or HOLD, a confidence in [0, 1], a short rationale, and price levels (entry near the last close, "
    "a protective stop on the losing side, target1 and target2 on the winning side). You never pick the quantity."
)
RISK_PROMPT = (
    "You are the risk manager. Hard limits have already been applied to this proposal; you may approve it, keep only "
    "a fraction of the allowed quantity, or reject it, with reasons. You can never increase the quantity."
)
VALIDATOR_PROMPT = (
    "You are the final validator. Check the proposal for internal consistency (levels on the right sides of entry, "
    "rationale matching the data) and answer valid or not, with the issues found."
)


def _messages(system: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": json.dumps(payload, sort_keys=True, default=str)}]


def _fallback(run: AgentRun, ctx: SymbolContext, agent: str, failure: ModelFailure) -> None:
    step: dict[str, object] = {"agent": agent, "kind": failure.kind, "detail": failure.detail, "to": "rules"}
    run.emit(EventType.FALLBACK, ctx, {**step, "from": failure.provider} if failure.provider else step)


def node_frames(caller: ProviderChain) -> dict[str, int]:
    """The timeframes a model node reads and how many closed bars of each (its settings' `frames`): the
    step reads them point in time (`trading.agents.trend_filter.frame_needs`) and its prompt carries them.
    Every model node's rule (these and the team's, `trading.agents.team`)."""
    return {str(tf): count for tf, count in caller.settings.frames.items()}


def context_view(ctx: SymbolContext, frames: dict[str, int]) -> dict[str, Any]:
    """The context as this node's prompt shows it: its own frames when it declares some (else as before)."""
    return ctx.prompt_view(frames) if frames else ctx.prompt_view()


def _proposal(ctx: SymbolContext, out: ProposalOut) -> TradeProposal:
    return TradeProposal(symbol=ctx.symbol, **out.model_dump())


class LLMAnalyst:
    def __init__(self, name: str, caller: ProviderChain, tools: ToolRegistry | None = None) -> None:
        self.name = name
        self.caller = caller
        self.tools = tools
        self.fallback = RuleAnalyst()
        self.frames = node_frames(caller)

    def propose(self, ctx: SymbolContext, run: AgentRun) -> TradeProposal:
        tools = run.tools if isinstance(run.tools, ToolRegistry) else self.tools
        try:
            out = self.caller.call(ProposalOut, _messages(ANALYST_PROMPT, context_view(ctx, self.frames)), ctx, run, tools, check=lambda o: _proposal(ctx, o))
            return _proposal(ctx, out)
        except ModelFailure as failure:
            _fallback(run, ctx, self.name, failure)
        except ValidationError as exc:  # e.g. a negative stop: the answer parsed but is not a valid proposal
            _fallback(run, ctx, self.name, ModelFailure("invalid", str(exc)[:300]))
        return self.fallback.propose(ctx, run)


class LLMRiskReviewer:
    def __init__(self, name: str, caller: ProviderChain) -> None:
        self.name = name
        self.caller = caller
        self.fallback = RuleRiskReviewer()
        self.frames = node_frames(caller)

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment:
        payload = {"context": context_view(ctx, self.frames), "proposal": proposal.model_dump(mode="json"), "after_hard_limits": hard.model_dump(mode="json")}
        try:
            out = self.caller.call(RiskOut, _messages(RISK_PROMPT, payload), ctx, run)
        except ModelFailure as failure:
            _fallback(run, ctx, self.name, failure)
            return self.fallback.review(ctx, proposal, hard, run)
        kept = hard.quantity * out.keep_fraction if out.approve else 0.0
        if kept == hard.quantity or kept == 0.0:
            quantity = kept
        else:
            quantity = float(int(kept)) if float(hard.quantity).is_integer() else kept  # whole shares stay whole
        return hard.model_copy(update={"approved": quantity > 0, "quantity": quantity, "reasons": [*hard.reasons, *out.reasons]})


class LLMValidator:
    def __init__(self, name: str, caller: ProviderChain) -> None:
        self.name = name
        self.caller = caller
        self.fallback = RuleValidator()
        self.frames = node_frames(caller)

    def validate(self, ctx: SymbolContext, proposal: TradeProposal, risk: RiskAssessment, run: AgentRun) -> ValidationResult:
        payload = {"context": context_view(ctx, self.frames), "proposal": proposal.model_dump(mode="json"), "risk": risk.model_dump(mode="json")}
        try:
            out = self.caller.call(ValidationOut, _messages(VALIDATOR_PROMPT, payload), ctx, run)
        except ModelFailure as failure:
            _fallback(run, ctx, self.name, failure)
            return self.fallback.validate(ctx, proposal, risk, run)
        issues = [*out.issues, *level_issues(proposal)]  # the rules' checks hold whatever the model says
        return ValidationResult(symbol=ctx.symbol, valid=out.valid and not level_issues(proposal), issues=issues)

