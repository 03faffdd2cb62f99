"""Agent roles and what every agent gets to work with.

A pipeline graph (trading/graph) places agents as nodes; the role says what a node reads and writes
in the graph's state: an analyst writes the proposal, research writes notes, a risk reviewer cuts or
rejects after the hard limits, a validator checks. The hard limits are code (role `limits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from trading.context import SymbolContext
from trading.cost import CostTracker
from trading.events import Event, EventSink, EventType
from trading.models import Mode, RiskAssessment, TradeProposal, ValidationResult


class Role(StrEnum):
    ANALYST = "analyst"
    RISK = "risk"
    VALIDATOR = "validator"
    RESEARCH = "research"  # writes notes (reports, debate) for later nodes; never a proposal
    LIMITS = "limits"  # the hard limits: code the pipeline runs, a fixed place in every graph


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


class Researcher(Protocol):
    """A research node: reads the context and earlier notes, returns notes to merge (its own key)."""

    name: str

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]: ...


class Planner(Protocol):
    """An analyst that reads earlier nodes' notes (the team's trader, portfolio manager)."""

    name: str

    def plan(self, ctx: SymbolContext, notes: Mapping[str, Any], proposal: TradeProposal | None, run: AgentRun) -> TradeProposal: ...
