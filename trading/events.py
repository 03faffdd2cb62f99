"""The event interface between the decision pipeline, the brokers and the ledger.

Everything that happens is an `Event`; producers call `EventSink.emit`. The ledger persists them
(append-only), `MemorySink` keeps them for tests and replays. Payloads are JSON-able dicts and never
carry secrets; each event type has a payload model (below) that the ledger validates on write and
`Event.typed()` reads back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trading.models import Frozen, Mode, Side, Verdict


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
    REFLECTION = "reflection"  # a closed position's outcome and its lesson (trading/agents/reflection.py)


# -- typed payloads ---------------------------------------------------------------------------------
# One model per event type. They declare the fields that readers (projections, reports, the trade
# manager) rely on, with their types; anything else a producer adds is kept as is (extra="allow").
# Validated on write (the ledger refuses a bad payload, naming the event type and the field) and read
# back typed with `Event.typed()`.
#
# Versions (`Event.v`, stored as the payload's "v" key): 1 = payloads written before the typed models
# (no "v" stored; read with the same models, every declared field optional or defaulted as the old
# readers defaulted it), 2 = validated on write. A future change to a model adds an upgrade step in
# `_UPGRADES` from the older version, so old ledgers keep reading.
PAYLOAD_VERSION = 2
LEGACY_VERSION = 1
VERSION_KEY = "v"


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


class DepositPayload(Payload):
    amount: float  # cash in (negative: out)
    source: str | None = None


class FillPayload(Payload):  # `trading.brokers.base.Fill.model_dump(mode="json")`
    fill_id: str | None = None
    client_order_id: str | None = None
    symbol: str
    side: Side
    quantity: float = Field(gt=0)
    price: float = Field(gt=0)
    commission: float = Field(default=0.0, ge=0)
    ts: datetime | None = None


class OrderSubmittedPayload(Payload):  # the request and the broker's order state; legs of a bracket
    client_order_id: str | None = None
    broker_order_id: str | None = None
    symbol: str | None = None
    side: Side | None = None
    quantity: float | None = None
    status: str | None = None
    stop: float | None = None
    target1: float | None = None
    target2: float | None = None
    bracket_leg: str | None = None
    session: str | None = None  # the exchange session it counts in (trades per day)


class RejectionPayload(Payload):
    client_order_id: str | None = None
    reason: str | None = None


class CancelPayload(Payload):
    canceled: int | None = None
    reason: str | None = None
    bracket_closed: str | None = None


class InterventionPayload(Payload):
    kind: str | None = None  # kill_switch, drawdown, daily_loss, trades_per_day, flatten, blocked, budget, resume
    reason: str | None = ""  # as the old readers defaulted it
    detail: str | None = None
    session: str | None = None
    equity: float | None = None


class ReconciliationPayload(Payload):  # the account as reconciled: a mark for the breakers
    ok: bool = False
    source: str | None = None
    cash: float | None = None
    equity: float | None = None
    positions: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    session: str | None = None


class CostPayload(Payload):  # one model call (`agent`, `usd`) or a run's summary (`scope == "run"`)
    scope: str | None = None
    agent: str | None = None
    model: str | None = None
    usd: float | None = None
    run_cost_usd: float = 0.0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class DecisionPayload(Payload):  # `trading.models.Decision.model_dump(mode="json")`, or a skipped symbol's HOLD
    verdict: Verdict | None = None
    strategy: str | None = None
    symbol: str | None = None
    decided_at: datetime | None = None
    side: Side | None = None
    quantity: float | None = None
    size: float | None = None
    entry: float | None = None
    stop: float | None = None
    target1: float | None = None
    target2: float | None = None
    rationale: str = ""


class SignalPayload(Payload):
    wants: Any = None
    signal: Any = None


class AgentPayload(Payload):  # prompt, response, tool call, proposal, risk assessment, validation, fallback
    agent: str | None = None
    model: str | None = None
    provider: str | None = None
    stage: str | None = None


class ReflectionPayload(Payload):
    """A position closed (the fill that brought it to 0 or through 0): what was decided, what came of it,
    and the lesson (rules or a model). `Event.as_of` is the decision bar at which it was written: a
    decision at an earlier bar never reads it."""

    symbol: str
    side: Literal["long", "short"]
    quantity: float = Field(gt=0)  # closed over the trade
    opened_at: datetime | None = None
    closed_at: datetime
    entry_price: float = Field(gt=0)  # the average cost held
    exit_price: float = Field(gt=0)  # quantity-weighted over the closing fills
    pnl: float  # realized, before commissions (the portfolio's rule)
    commission: float = Field(default=0.0, ge=0)
    return_pct: float  # pnl / (entry_price * quantity)
    open_order: str | None = None  # client order ids of the opening and the closing fill
    close_order: str | None = None
    closing_fill: str  # the ledger event id of the fill that closed it (one reflection per close)
    decision_run_id: str | None = None  # the decision that opened it, when the ledger has it
    decision_event_id: str | None = None
    rationale: str = ""
    lesson: str
    by: Literal["rules", "model"] = "rules"
    model: str | None = None


PAYLOADS: dict[EventType, type[Payload]] = {
    EventType.DEPOSIT: DepositPayload,
    EventType.FILL: FillPayload,
    EventType.ORDER_SUBMITTED: OrderSubmittedPayload,
    EventType.REJECTION: RejectionPayload,
    EventType.CANCEL: CancelPayload,
    EventType.INTERVENTION: InterventionPayload,
    EventType.RECONCILIATION: ReconciliationPayload,
    EventType.COST: CostPayload,
    EventType.DECISION: DecisionPayload,
    EventType.SIGNAL: SignalPayload,
    EventType.REFLECTION: ReflectionPayload,
    **{t: AgentPayload for t in (EventType.PROMPT, EventType.RESPONSE, EventType.TOOL_CALL, EventType.PROPOSAL, EventType.RISK_ASSESSMENT, EventType.VALIDATION, EventType.FALLBACK)},
}
assert set(PAYLOADS) == set(EventType), "every event type has a payload model"

# (type, from version) -> a function giving the payload at the next version. 1 -> 2 changed no field.
_UPGRADES: dict[tuple[EventType, int], Any] = {}


class PayloadError(ValueError):
    """A payload does not match its event type's model; the message names the type and the fields."""


_BY_VALUE: dict[str, type[Payload]] = {t.value: m for t, m in PAYLOADS.items()}  # a StrEnum member finds its value


def validate_payload(type_: EventType | str, payload: Mapping[str, Any], v: int = PAYLOAD_VERSION) -> Payload:
    """`payload` as its type's model (upgraded from version `v`); PayloadError names what is wrong."""
    model = _BY_VALUE.get(type_)
    if model is None:
        raise PayloadError(f"unknown event type {type_!r}")
    data: Mapping[str, Any] = payload
    if v != PAYLOAD_VERSION:
        if v > PAYLOAD_VERSION:
            raise PayloadError(f"{type_} payload has version {v}, newer than this code's {PAYLOAD_VERSION}: upgrade quantlake")
        for version in range(max(v, LEGACY_VERSION), PAYLOAD_VERSION):
            upgrade = _UPGRADES.get((EventType(type_), version))
            data = upgrade(data) if upgrade is not None else data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(payload)'}: {err['msg']} (got {err.get('input')!r:.60})" for err in exc.errors())
        raise PayloadError(f"invalid {EventType(type_).value} payload: {fields}") from None


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
    v: int = PAYLOAD_VERSION  # the payload's schema version (1: written before the typed models)

    def typed(self) -> Payload:
        """The payload as its type's model (e.g. `FillPayload`); PayloadError if it does not fit."""
        return validate_payload(self.type, self.payload, self.v)


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
