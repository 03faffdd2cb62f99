"""Deterministic rule-based agents: the offline default and the fallback when a model fails.

The analyst turns the strategy's signal into a proposal with the strategy's own levels (so paper
trading follows the backtest; ATR levels on request); the risk reviewer
keeps the hard-limited quantity unless confidence is low; the validator checks the levels' order.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from strategies import controls
from trading.agents.base import AgentRun
from trading.context import SymbolContext
from trading.models import Action, RiskAssessment, TradeProposal, ValidationResult


class RuleAnalystConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    default_levels: bool = Field(
        False, description="Invent ATR stop/targets when the strategy gives none (off: trade exactly as the backtest)."
    )
    stop_atr: float = Field(2.0, gt=0, description="Stop distance in ATRs when the strategy gives no stop.")
    target1_atr: float = Field(2.0, gt=0)
    target2_atr: float = Field(4.0, gt=0)
    confidence: float = Field(0.6, ge=0, le=1)


class RuleAnalyst:
    name = "rules_analyst"

    def __init__(self, config: RuleAnalystConfig | None = None) -> None:
        self.config = config or RuleAnalystConfig()

    def propose(self, ctx: SymbolContext, run: AgentRun) -> TradeProposal:
        want = ctx.wants
        if want is None:
            return TradeProposal(symbol=ctx.symbol, action=Action.HOLD, confidence=1.0, rationale="no signal")
        c = self.config
        price = ctx.close
        atr = ctx.features.get("atr_14") or price * 0.02  # before ATR warms up: 2 % of price
        exiting = (want == "SELL" and ctx.position > 0) or (want == "BUY" and ctx.position < 0)
        if exiting:
            return TradeProposal(
                symbol=ctx.symbol,
                action=Action(want),
                confidence=1.0,
                rationale=f"{ctx.strategy}: exit signal at {ctx.as_of.isoformat()}",
                entry=price,
                quantity=abs(ctx.position),
            )
        sign = 1.0 if want == "BUY" else -1.0
        stop, t1, t2 = (ctx.signal.get(k) for k in ("stop", "target1", "target2"))
        if c.default_levels:
            stop = stop or max(price - sign * c.stop_atr * atr, 1e-9)
            t1 = t1 or max(price + sign * c.target1_atr * atr, 1e-9)
            t2 = t2 or max(price + sign * c.target2_atr * atr, 1e-9)
        return TradeProposal(
            symbol=ctx.symbol,
            action=Action(want),
            confidence=c.confidence,
            rationale=f"{ctx.strategy}: entry signal at {ctx.as_of.isoformat()}; ATR {atr:.4g}",
            entry=price,
            stop=stop,
            target1=t1,
            target2=t2,
        )


class RuleRiskConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_confidence: float = Field(0.5, ge=0, le=1, description="Below this, a risk-increasing proposal is rejected.")


class RuleRiskReviewer:
    name = "rules_risk"

    def __init__(self, config: RuleRiskConfig | None = None) -> None:
        self.config = config or RuleRiskConfig()

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment:
        if not reduces_position(proposal, ctx.position) and proposal.confidence < self.config.min_confidence:
            return hard.model_copy(
                update={"approved": False, "quantity": 0.0, "reasons": [*hard.reasons, f"confidence {proposal.confidence:.2f} < {self.config.min_confidence:.2f}"]}
            )
        return hard


class RuleValidator:
    name = "rules_validator"

    def validate(self, ctx: SymbolContext, proposal: TradeProposal, risk: RiskAssessment, run: AgentRun) -> ValidationResult:
        return ValidationResult(symbol=ctx.symbol, valid=not level_issues(proposal), issues=level_issues(proposal))


def reduces_position(p: TradeProposal, position: float) -> bool:
    side = 1.0 if p.action == Action.BUY else -1.0 if p.action == Action.SELL else 0.0
    return controls.reduces(position, side)


def level_issues(p: TradeProposal) -> list[str]:
    """Stops below and targets above the entry for a buy (mirrored for a sell), targets in order."""
    issues: list[str] = []
    if p.action == Action.HOLD or p.entry is None:
        return issues
    sign = 1.0 if p.action == Action.BUY else -1.0
    if p.stop is not None and sign * (p.entry - p.stop) <= 0:
        issues.append(f"{p.symbol}: stop {p.stop} is not on the losing side of entry {p.entry} for a {p.action}")
    for name, level in (("target1", p.target1), ("target2", p.target2)):
        if level is not None and sign * (level - p.entry) <= 0:
            issues.append(f"{p.symbol}: {name} {level} is not on the winning side of entry {p.entry} for a {p.action}")
    if p.target1 is not None and p.target2 is not None and sign * (p.target2 - p.target1) < 0:
        issues.append(f"{p.symbol}: target2 {p.target2} comes before target1 {p.target1}")
    return issues
