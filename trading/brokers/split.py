"""One broker account split between pipelines: `PipelineBroker` is the account as one pipeline trades it.

Several pipelines in paper or live mode share one Alpaca account (or, in tests, one simulated broker).
Each trades through its own `PipelineBroker` over the one broker and its own sub-account of the ledger
(`trading.accounts.SubAccount`), so the executor, the breakers and the projections run unchanged:

- orders: every order reaches the broker under its pipeline's prefix (`tagged`: `<pipeline id>.<client
  id>`; ids never contain a dot), so the account's orders say whose they are and two pipelines making
  the same decision send two orders; the pipeline (its executor, its ledger) sees its own ids back.
  The account's equity is not the pipeline's: an entry goes as the fixed quantity the pipeline sized on
  its own capital (no `size` or caps re-sized at the fill on the account's equity), and without bracket
  levels (a broker keeps one bracket per symbol of the account, which two pipelines' positions would
  share): the trade manager places the stop and targets from the ledger as the pipeline's own exits;
- fills: what the broker filled of the pipeline's orders beyond what its sub-account has booked is
  booked there (`sync`), from each order's cumulative quantity and average price, as the trade manager
  books Alpaca's (fill id `<broker order id>@<cumulative quantity>`): the broker is the truth of what
  filled, the tag says whose it is. The trade manager follows the entries' brackets under the same
  prefix and records their legs in the book: `sync` books a leg's fills too (an OCO's stop leg by its
  own order, as the manager does, so either may book first and the event ids make it once);
- positions, cash and equity: the sub-account's (its capital, then its fills), marked at the account's
  prices (`prices`); open orders, cancels and the window's flatten: its own orders and positions only.
An exit closes only what the pipeline's book holds beyond its own open exits (never another pipeline's
shares). The account's hard limits over every pipeline are `trading.accounts.AccountBook`'s; the kill
switch (`kill_split_account`) halts the account and closes each book by its own orders.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from trading.brokers.base import Account, BrokerError, Clock, Fill, OrderRequest, OrderState, OrderType
from trading.events import Event, EventType
from trading.execution import Executor, fill_event_id
from trading.ledger import Ledger, replay_portfolio
from trading.models import Mode, Side

SEPARATOR = "."  # not in a pipeline id (trading.accounts.PIPELINE_ID) nor in ours: the prefix reads back unambiguously
_EPS = 1e-9


def tagged(pipeline_id: str, client_order_id: str) -> str:
    """The id the broker has for a pipeline's order."""
    return f"{pipeline_id}{SEPARATOR}{client_order_id}"


def owner(broker_client_id: str) -> str | None:
    """The pipeline a broker's order belongs to (its prefix), None for an order no pipeline sent."""
    head, sep, _ = broker_client_id.partition(SEPARATOR)
    return head if sep else None


@runtime_checkable
class SharedBroker(Protocol):
    """What a split needs of the one broker: the Broker protocol, one order's cancel and the prices it marks positions at."""

    name: str

    def account(self) -> Account: ...

    def positions(self) -> dict[str, float]: ...

    def submit(self, order: OrderRequest) -> OrderState: ...

    def get_order(self, client_order_id: str) -> OrderState | None: ...

    def open_orders(self) -> list[OrderState]: ...

    def cancel(self, broker_order_id: str) -> None: ...

    def cancel_all(self) -> int: ...

    def close_all(self) -> list[OrderState]: ...

    def prices(self) -> dict[str, float]: ...

    def clock(self) -> Clock: ...


class PipelineBroker:
    """The Broker protocol for one pipeline on a shared account (see the module docstring)."""

    def __init__(self, broker: SharedBroker, pipeline_id: str, book: Ledger, *, capital: float, now: datetime, mode: Mode, run_id: str) -> None:
        self.broker, self.pipeline_id, self.book = broker, pipeline_id, book
        self.capital, self.now, self.mode, self.run_id = capital, now, mode, run_id
        self.name = f"{broker.name}/{pipeline_id}"
        self._prefix = tagged(pipeline_id, "")
        self._stale = True  # fills may have come since the last sync (none yet; or an order went out since)

    # -- ids
    def _mine(self, state: OrderState) -> bool:
        return state.client_order_id.startswith(self._prefix)

    def _own(self, state: OrderState) -> OrderState:
        return state.model_copy(update={"client_order_id": state.client_order_id[len(self._prefix) :]})

    # -- orders
    def submit(self, order: OrderRequest) -> OrderState:
        """Sends `order` under the pipeline's prefix. An exit (`reduce_only`) may close only what the
        pipeline's book holds beyond its own open exits: on a shared account the broker's check (no sell
        beyond the position) would let it sell another pipeline's shares and leave its book short."""
        if order.reduce_only and self.broker.get_order(tagged(self.pipeline_id, order.client_order_id)) is None:
            left = self._closable(order.symbol, order.side)
            if order.quantity > left + _EPS:
                raise BrokerError(
                    f"{self.name}: order {tagged(self.pipeline_id, order.client_order_id)} ({order.side.value} {order.quantity:g} {order.symbol}): "
                    f"pipeline {self.pipeline_id}'s book has {left:g} left to close (its open orders hold the rest)"
                )
        return self._send(order)

    def _closable(self, symbol: str, side: Side) -> float:
        """What the book holds on the other side of `side`, less what its open orders on `side` still close."""
        held = self.positions().get(symbol, 0.0)
        pending = sum(o.quantity - o.filled_quantity for o in self.open_orders() if o.symbol == symbol and o.side == side)
        return max(held if side == Side.SELL else -held, 0.0) - pending

    def _send(self, order: OrderRequest) -> OrderState:
        wire = order.model_copy(
            update={"client_order_id": tagged(self.pipeline_id, order.client_order_id), "size": None, "caps": None, "stop": None, "target1": None, "target2": None}
        )
        self._stale = True  # a market order may fill at once
        return self._own(self.broker.submit(wire))

    def get_order(self, client_order_id: str) -> OrderState | None:
        found = self.broker.get_order(tagged(self.pipeline_id, client_order_id))
        return None if found is None else self._own(found)

    def open_orders(self) -> list[OrderState]:
        return [self._own(o) for o in self.broker.open_orders() if self._mine(o)]

    def cancel_all(self) -> int:
        """Cancels this pipeline's open orders (the other pipelines' stay); returns how many it canceled.

        A filled order cannot be canceled: one that fills between the listing and its cancel is refused
        by the broker (Alpaca: 422, not cancelable), and is left as what it is, a fill the next sync
        books (so `close_all` closes it too). A refusal for an order still open is raised."""
        canceled = 0
        for order in [o for o in self.broker.open_orders() if self._mine(o)]:
            try:
                self.broker.cancel(order.broker_order_id)
                canceled += 1
            except BrokerError:
                now = self.broker.get_order(order.client_order_id)
                if now is None or now.status.is_open:
                    raise
        self._stale = True  # what filled meanwhile is booked before the positions are read
        return canceled

    def close_all(self) -> list[OrderState]:
        """Cancels this pipeline's open orders and closes its positions with market orders (ids from the
        symbol, the quantity and the run's now: a retry of the run sends none twice)."""
        self.cancel_all()
        out = []
        for symbol, qty in sorted(self.positions().items()):
            key = hashlib.sha256(f"{symbol}|{qty:g}|{self.now.isoformat()}".encode()).hexdigest()[:24]
            side = Side.SELL if qty > 0 else Side.BUY
            # its own open orders were just canceled: the close is the whole book (no exit check)
            out.append(self._send(OrderRequest(client_order_id=f"close-{key}", symbol=symbol, side=side, quantity=abs(qty), type=OrderType.MARKET, reduce_only=True)))
        return out

    # -- the sub-account
    def sync(self) -> int:
        """Books in the sub-account what the broker filled of this pipeline's orders beyond what it has;
        an order that is over and fully booked is marked settled (a CANCEL event) and not asked again."""
        booked: dict[str, float] = {}
        notional: dict[str, float] = {}
        by_order: dict[str, tuple[float, float]] = {}  # broker order id -> (quantity, notional) booked
        quantity: dict[str, float] = {}
        legs: set[str] = set()  # the trade manager's exits (`trading.trade_manager`): an OCO's stop leg is its own order
        settled: set[str] = set()
        for event in self.book.events(types=[EventType.ORDER_SUBMITTED.value, EventType.FILL.value, EventType.REJECTION.value, EventType.CANCEL.value]):
            cid = event.payload.get("client_order_id")
            if not isinstance(cid, str):
                continue
            if event.type == EventType.ORDER_SUBMITTED and event.payload.get("broker_order_id"):
                quantity.setdefault(cid, float(event.payload.get("quantity") or 0.0))
                if event.payload.get("bracket_leg"):
                    legs.add(cid)
            elif event.type == EventType.FILL:
                qty, price = float(event.payload["quantity"]), float(event.payload["price"])
                booked[cid] = booked.get(cid, 0.0) + qty
                notional[cid] = notional.get(cid, 0.0) + qty * price
                broker_id, sep, _cum = str(event.payload.get("fill_id") or "").rpartition("@")
                if sep:
                    prior = by_order.get(broker_id, (0.0, 0.0))
                    by_order[broker_id] = (prior[0] + qty, prior[1] + qty * price)
            else:
                settled.add(cid)
        count = 0
        self._stale = False
        view = getattr(self.broker, "order_view", None)  # Alpaca's: an order with its legs
        if callable(view):
            count += self._sync_legs({cid: view(tagged(self.pipeline_id, cid)) for cid in quantity if cid in legs and cid not in settled}, by_order)
        for cid in quantity:
            if cid in settled or (cid in legs and callable(view)):
                continue
            state = self.get_order(cid)
            if state is None:
                raise BrokerError(f"{self.name}: order {tagged(self.pipeline_id, cid)} is in the ledger but not at the broker")
            done, paid = booked.get(cid, 0.0), notional.get(cid, 0.0)
            cum, avg = state.filled_quantity, state.avg_fill_price
            if avg is not None and cum > done + _EPS:
                qty = cum - done
                fill = Fill(
                    fill_id=f"{state.broker_order_id}@{cum:g}", client_order_id=cid, symbol=state.symbol, side=state.side,
                    quantity=qty, price=(avg * cum - paid) / qty, ts=self.now,
                )  # fmt: skip
                self._emit(EventType.FILL, fill.model_dump(mode="json"), state.symbol, fill_event_id(fill.fill_id))
                count += 1
            if not state.status.is_open:
                why = {"client_order_id": cid, "reason": f"settled: {state.status.value}, {cum:g} filled", "settled": True}
                self._emit(EventType.CANCEL, why, state.symbol, hashlib.sha256(f"settled|{cid}".encode()).hexdigest()[:32])
        return count

    def _sync_legs(self, views: dict[str, Any], by_order: dict[str, tuple[float, float]]) -> int:
        """The bracket legs' fills (each order's, an OCO's stop leg by its own broker id, as the trade
        manager books them: under the leg whose order it is, else the OCO's leg, and the same event ids);
        a leg is settled once every part of it is over."""
        count = 0
        missing = sorted(cid for cid, view in views.items() if view is None)
        if missing:
            raise BrokerError(f"{self.name}: orders {[tagged(self.pipeline_id, c) for c in missing]} are in the ledger but not at the broker")
        own = {view.state.broker_order_id: cid for cid, view in views.items()}  # a breakeven stop is also its OCO's leg
        for cid, view in views.items():
            states: list[OrderState] = [o.state for o in (view, *view.legs)]
            for state in states:
                done, paid = by_order.get(state.broker_order_id, (0.0, 0.0))
                cum, avg = state.filled_quantity, state.avg_fill_price
                if avg is not None and cum > done + _EPS:
                    qty = cum - done
                    fill = Fill(
                        fill_id=f"{state.broker_order_id}@{cum:g}", client_order_id=own.get(state.broker_order_id, cid), symbol=state.symbol,
                        side=state.side, quantity=qty, price=(avg * cum - paid) / qty, ts=self.now,
                    )  # fmt: skip
                    self._emit(EventType.FILL, fill.model_dump(mode="json"), state.symbol, fill_event_id(fill.fill_id))
                    by_order[state.broker_order_id] = (cum, avg * cum)
                    count += 1
            if not any(s.status.is_open for s in states):
                filled = sum(s.filled_quantity for s in states)
                why = {"client_order_id": cid, "reason": f"settled: {states[0].status.value}, {filled:g} filled", "settled": True}
                self._emit(EventType.CANCEL, why, states[0].symbol, hashlib.sha256(f"settled|{cid}".encode()).hexdigest()[:32])
        return count

    def _emit(self, type_: EventType, payload: dict[str, object], symbol: str, event_id: str) -> None:
        self.book.emit(Event(type=type_, run_id=self.run_id, mode=self.mode, symbol=symbol, as_of=self.now, payload=payload, event_id=event_id))

    def _fresh(self) -> None:
        """A read within a run syncs once, and again only after an order went out (each sync reads the book)."""
        if self._stale:
            self.sync()

    def positions(self) -> dict[str, float]:
        self._fresh()
        return {s: q for s, q in replay_portfolio(self.book).positions.items() if abs(q) > _EPS}

    def account(self) -> Account:
        """The sub-account: its capital before its first deposit, then its ledger; marked at the account's prices."""
        self._fresh()
        portfolio = replay_portfolio(self.book)
        funded = any(True for _ in self.book.events(types=[EventType.DEPOSIT.value]))
        cash = portfolio.cash if funded else self.capital + portfolio.cash
        prices = self.broker.prices()
        held = {s: q for s, q in portfolio.positions.items() if abs(q) > _EPS}
        unpriced = sorted(s for s in held if s not in prices)
        if unpriced:  # an equity without them would be wrong: fail closed (the executor sends nothing)
            raise BrokerError(f"{self.name}: the account has no price for {unpriced}, held by pipeline {self.pipeline_id}")
        equity = cash + sum(q * prices[s] for s, q in held.items())
        return Account(cash=cash, equity=equity, buying_power=max(cash, 0.0))

    def clock(self) -> Clock:
        return self.broker.clock()


def split(broker: SharedBroker, books: dict[str, Ledger], capital: dict[str, float], *, now: datetime, mode: Mode, run_id: str) -> dict[str, PipelineBroker]:
    """One `PipelineBroker` per pipeline (by id) over the one `broker`, each on its sub-account."""
    return {pid: PipelineBroker(broker, pid, book, capital=capital[pid], now=now, mode=mode, run_id=run_id) for pid, book in books.items()}



def kill_split_account(broker: SharedBroker, ledger: Ledger, pipeline_ids: list[str], *, reason: str, now: datetime, mode: Mode, run_id: str) -> list[OrderState]:
    """The kill switch on an account split between pipelines: the account's halt (no pipeline id: every
    pipeline's, until one resume), every open order canceled, each pipeline's positions closed by its own
    orders in its own book (so its book goes flat as they fill), and what no book holds (`unattributed`)
    closed on the account, recorded without a pipeline. The account's own close-all would leave every
    book holding what the broker no longer has."""
    from trading.accounts import SubAccount, unattributed_positions  # it reads no broker: no cycle at import

    Executor(broker, ledger, mode=mode, run_id=run_id, now=now).intervene("kill_switch", reason)
    books = {p: SubAccount(ledger, p) for p in pipeline_ids}
    views = {p: PipelineBroker(broker, p, book, capital=0.0, now=now, mode=mode, run_id=run_id) for p, book in books.items()}
    for view in views.values():
        view.sync()  # the books up to date first: what they hold is theirs to close, the rest is the gap
    gap = unattributed_positions(broker.positions(), ledger, pipeline_ids)
    canceled = broker.cancel_all()
    closing: list[OrderState] = []
    for pipeline_id, view in views.items():
        closing += Executor(view, books[pipeline_id], mode=mode, run_id=run_id, now=now).kill_switch(reason)
    for symbol, qty in sorted(gap.items()):
        key = hashlib.sha256(f"kill|{symbol}|{qty:g}|{now.isoformat()}".encode()).hexdigest()[:24]
        order = OrderRequest(client_order_id=f"close-{key}", symbol=symbol, side=Side.SELL if qty > 0 else Side.BUY, quantity=abs(qty), reduce_only=True)
        state = broker.submit(order)
        payload = {**order.model_dump(mode="json"), **state.model_dump(mode="json")}
        ledger.emit(Event(type=EventType.ORDER_SUBMITTED, run_id=run_id, mode=mode, symbol=symbol, as_of=now, payload=payload))
        closing.append(state)
    ledger.emit(Event(type=EventType.CANCEL, run_id=run_id, mode=mode, as_of=now, payload={"canceled": canceled, "reason": reason}))
    return closing
