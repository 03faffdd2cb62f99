"""Domain types shared by the agent pipeline, the risk limits, the brokers and the ledger.

Frozen pydantic models: validated at construction, safe to hash into ids, serializable to the ledger.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Mode(StrEnum):
    VALIDATION = "validation"  # decide, send nothing
    SIMULATION = "simulation"  # seeded simulated broker on lake prices
    PAPER = "paper"  # Alpaca paper account
    LIVE = "live"  # Alpaca live; explicit opt-in only


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"
    HOLD = "HOLD"


class Verdict(StrEnum):
    EXECUTE = "EXECUTE"
    HOLD = "HOLD"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TradeProposal(Frozen):
    """What an analyst agent proposes for one symbol (the LLM's structured output)."""

    symbol: str
    action: Action
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str
    entry: float | None = Field(default=None, gt=0)
    stop: float | None = Field(default=None, gt=0)
    target1: float | None = Field(default=None, gt=0)
    target2: float | None = Field(default=None, gt=0)
    quantity: float | None = Field(default=None, ge=0)


class RiskAssessment(Frozen):
    symbol: str
    approved: bool
    quantity: float = Field(ge=0)
    reasons: list[str] = Field(default_factory=list)
    hard_violations: list[str] = Field(default_factory=list)


class ValidationResult(Frozen):
    symbol: str
    valid: bool
    issues: list[str] = Field(default_factory=list)


class Decision(Frozen):
    """The final word for one symbol at one decision time."""

    run_id: str
    strategy: str
    symbol: str
    decided_at: datetime  # the bar time the decision is as of (never later data)
    verdict: Verdict
    side: Side | None = None
    quantity: float = Field(default=0.0, ge=0)
    size: float | None = Field(default=None, gt=0, le=1)  # an uncut entry: the strategy's share of equity (OrderRequest.size)
    entry: float | None = None
    stop: float | None = None
    target1: float | None = None
    target2: float | None = None
    rationale: str = ""


class PortfolioSnapshot(Frozen):
    cash: float
    equity: float
    positions: dict[str, float] = Field(default_factory=dict)  # symbol -> signed quantity
    prices: dict[str, float] = Field(default_factory=dict)  # symbol -> last price
    start_of_day_equity: float | None = None
    peak_equity: float | None = None
    trades_today: int = 0
