"""The event interface between the decision pipeline, the brokers and the ledger.

Everything that happens is an `Event`; producers call `EventSink.emit`. The ledger persists them
(append-only), `MemorySink` keeps them for tests and replays. Payloads are JSON-able dicts and never
carry secrets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import Field

from trading.models import Frozen, Mode


class EventType(StrEnum):
    SIGNAL = "signal"
    PROMPT = "prompt"
    RESPONSE = "response"
    TOOL_CALL = "tool_call"
    PROPOSAL = "proposal"
    RISK_ASSESSMENT = "risk_assessment"
    VALIDATION = "validation"
    DECISION = "decision"
    ORDER_SUBMITTED = "order_submitted"
    FILL = "fill"
    REJECTION = "rejection"
    CANCEL = "cancel"
    INTERVENTION = "intervention"
    COST = "cost"
    RECONCILIATION = "reconciliation"
    FALLBACK = "fallback"
    DEPOSIT = "deposit"  # cash in (payload {"amount": float}); the ledger's portfolio starts here


class Event(Frozen):
    type: EventType
    run_id: str
    mode: Mode
    payload: dict[str, Any] = Field(default_factory=dict)
    trace_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    symbol: str | None = None
    as_of: datetime | None = None  # the market time the event is about (decision bar)
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class MemorySink:
    """Keeps events in order; for tests, replays and single-process runs."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, *types: EventType) -> list[Event]:
        return [e for e in self.events if e.type in types]


class FanOutSink:
    """Sends every event to several sinks (e.g. the ledger and the run's metadata collector)."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)
