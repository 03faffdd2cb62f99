"""The broker interface and the order/fill types every broker and the ledger share.

Quantities are positive; the side says the direction. Positions are signed (short < 0). Every order
carries a client order id derived from the decision, so sending it again is recognisably the same
order: brokers treat a known id as "already sent" and return the existing order.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import Field

from trading.models import Frozen, Side


class BrokerError(RuntimeError):
    """The broker refused or failed; the message names the order (client id) and the cause."""


class UnknownOutcome(BrokerError):
    """A submit timed out or the transport failed: the order may or may not exist. Look it up by id."""


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(StrEnum):
    NEW = "new"  # accepted by the broker, not filled yet
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class FillCaps(Frozen):
    """The hard limits' caps an entry carries to its fill (`strategies.entries.capped_at_fill`): a
    broker that fills on its own prices (the simulated one) applies them there; others ignore them."""

    max_position_pct: float = Field(gt=0, le=1)
    max_sector_pct: float = Field(gt=0, le=1)
    sector: tuple[str, ...] = ()  # the other symbols of the order's sector


class OrderRequest(Frozen):
    client_order_id: str = Field(min_length=1, max_length=128)
    symbol: str
    side: Side
    quantity: float = Field(gt=0)
    type: OrderType = OrderType.MARKET
    limit_price: float | None = Field(default=None, gt=0)
    # Bracket levels (all optional): stop loss, first target (exits half), second target (the rest).
    stop: float | None = Field(default=None, gt=0)
    target1: float | None = Field(default=None, gt=0)
    target2: float | None = Field(default=None, gt=0)
    reduce_only: bool = False  # exits: allowed through a halt
    # An entry sized at the fill by `strategies.entries` (the backtest's rule): `size` of the equity
    # then. A broker that can size at the fill (the simulated one) trades that; others trade `quantity`.
    size: float | None = Field(default=None, gt=0, le=1)
    caps: FillCaps | None = None  # an entry's position/sector caps, applied again at the fill


class OrderState(Frozen):
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: float
    filled_quantity: float = 0.0
    avg_fill_price: float | None = None
    status: OrderStatus
    submitted_at: datetime | None = None
    reason: str | None = None  # why rejected / canceled


class Fill(Frozen):
    """One execution. Cash moves by -signed(quantity) * price - commission."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: float = Field(gt=0)
    price: float = Field(gt=0)
    commission: float = Field(default=0.0, ge=0)
    ts: datetime

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side == Side.BUY else -self.quantity


class Account(Frozen):
    cash: float
    equity: float
    buying_power: float


class Clock(Frozen):
    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


class Broker(Protocol):
    name: str

    def account(self) -> Account: ...

    def positions(self) -> dict[str, float]: ...

    def submit(self, order: OrderRequest) -> OrderState:
        """Sends `order` once: a client id the broker already knows returns that order, unsent again."""
        ...

    def get_order(self, client_order_id: str) -> OrderState | None: ...

    def open_orders(self) -> list[OrderState]: ...

    def cancel_all(self) -> int: ...

    def close_all(self) -> list[OrderState]: ...

    def clock(self) -> Clock: ...


def client_order_id(strategy: str, symbol: str, bar: datetime, side: Side, leg: str = "entry") -> str:
    """Deterministic id for the order a decision makes: the same decision always maps to the same id."""
    key = f"{strategy}|{symbol}|{bar.isoformat()}|{side.value}|{leg}"
    return f"ql-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
