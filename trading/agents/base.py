"""The three agent roles and what every agent gets to work with."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from trading.context import SymbolContext
from trading.cost import CostTracker
from trading.events import Event, EventSink, EventType
from trading.models import Mode, RiskAssessment, TradeProposal, ValidationResult


class Role(StrEnum):
    ANALYST = "analyst"
    RISK = "risk"
    VALIDATOR = "validator"


class CostClass(StrEnum):
    FREE = "free"  # rules: no model call
    MODEL = "model"  # one or more model calls per judged symbol


@dataclass
class AgentRun:
    """Per-cycle services an agent may use: where to record events, and what it has spent."""

    run_id: str
    mode: Mode
    sink: EventSink
    costs: CostTracker
    tools: object | None = None  # a trading.agents.tools.ToolRunner when the pipeline offers tools
    notes: dict[str, str] = field(default_factory=dict)

    def emit(self, type_: EventType, ctx: SymbolContext, payload: dict[str, object]) -> None:
        self.sink.emit(Event(type=type_, run_id=self.run_id, mode=self.mode, symbol=ctx.symbol, as_of=ctx.as_of, payload=payload))


class Analyst(Protocol):
    name: str

    def propose(self, ctx: SymbolContext, run: AgentRun) -> TradeProposal: ...


class RiskReviewer(Protocol):
    """The soft assessment, after the hard limits passed: may cut or reject, never enlarge."""

    name: str

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment: ...


class Validator(Protocol):
    name: str

    def validate(self, ctx: SymbolContext, proposal: TradeProposal, risk: RiskAssessment, run: AgentRun) -> ValidationResult: ...
