"""A seeded simulated broker on lake prices: next-bar fills, costs, partial fills, rejections, brackets.

Orders sent before a bar fill at that bar's open (slipped, with commission), so a decision at bar t
fills at t+1 at the earliest. An order also never fills at a price from before it was sent: the
broker's `placed_at` (the run's now, set by the executor) holds it until the first bar that opens
at or after that instant, so a flatten sent at 15:50 on daily bars fills at the next session's open,
not at the open of the day it was sent in. Randomness (rejections, partial fills) is drawn from a generator seeded
by the broker's seed and the order's client id: the same orders give the same fills on every run.
Brackets follow `strategies.brackets`, the rule the backtest engine compiles: from the bar after the
entry fills, stop first, then target 1 (half out, stop to breakeven), then target 2; a short entry's
bracket (with `allow_short`) is the mirror image, its exits buys that cash must cover.

Entries follow `strategies.entries`, the rule the backtest compiles. An entry that carries a `size`
(`OrderRequest.size`: the decision's limits did not cut it) is sized at its fill exactly as the
backtest sizes it: side x floor(available x size / (fill price x (1 + fee))) shares in all, available
being the equity after closing an opposite position (its fee and slippage paid). Any other order's
part that opens a position or adds to a short is cut to that with size 1. Either is capped by the
free cash (`strategies.entries.free_cash`: the equity after its closing part less the gross value of
the other positions), so a short never commits cash a long already spent. An entry that carries
the hard limits' caps (`OrderRequest.caps`, set by the executor) is cut again at its fill by
`strategies.entries.capped_at_fill`, on the equity and its fill price then, whether sized at the
fill or sent for a fixed quantity (the order's quantity becomes what they leave), as the backtest
with limits cuts it. The equity values
positions at the bar's open, once before the bar's orders, as the backtest does. A buy is in any
case capped by the cash there is. An order cut at its fill (by the rule or the cash) does not carry
its remainder to later bars: the remainder is canceled, with the reason. A random partial fill's
remainder stays open and fills on later bars.

Costs are the backtest's (`trading.session.backtest_config` maps a `SimConfig` to its `BacktestConfig`): slippage in
bps against the trade; commission = traded value x fee, where fee = commission_bps + the per-share
commission as a fraction of the order's unslipped price (the bar's open, or a bracket's level), the
engine's own conversion. With slippage the per-share part is thus off a true per-share charge by
the slippage fraction (2 bps of half a cent a share), and equal to the backtest's to the cent.
Within a bar, exits go first (brackets' included), then entries; each group sells first, then buys
by value (ties by symbol), as the backtest orders them.

A cancel (`cancel_all`, `close_all`: the window's flatten, the kill switch) takes effect at the
instant it is sent (`placed_at`), as at a real venue: an order whose fill bar had opened by then was
filled at that open already and cannot be undone. The broker lives through that bar only when it
reaches the lake (on daily bars, the next session), so such an order stays open until then, fills
there, and is canceled only at a bar opening after the cancel. Which bar an order fills at comes from
the exchange calendar and the bars' timeframe (daily bars open at the session's open,
`lake.calendar.restamp_daily`; shorter ones every bar length from it). `close_all` closes what each
position will be once those fills are in: its close orders take, at their fill, the whole position
then held on their side (their quantity is the estimate at the flatten).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from lake.calendar import EXCHANGE_TZ, session_bounds, trading_days
from lake.schema import TIMEFRAMES
from strategies import controls
from strategies.brackets import EXIT_ALL, EXIT_HALF, FLAT, FULL, bracket_step, half_of
from strategies.entries import after_closing, capped_at_fill, entry_shares, free_cash
from trading.brokers.base import (
    Account,
    BrokerError,
    Clock,
    Fill,
    FillCaps,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
)
from trading.models import Side
from trading.risk import FRACTION_STEP

CAPPED_AT_FILL = "cut at the fill by the position and sector caps"  # an order's reason: the caps re-sized it


class SimConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    slippage_bps: float = Field(0.0, ge=0, le=1000)
    commission_bps: float = Field(0.0, ge=0, le=1000)
    commission_per_share: float = Field(0.0, ge=0)
    partial_fill_prob: float = Field(0.0, ge=0, le=1, description="Chance an order fills only in part on a bar.")
    partial_fill_min: float = Field(0.25, gt=0, le=1, description="Smallest part of the remainder a partial fill takes.")
    reject_prob: float = Field(0.0, ge=0, le=1, description="Chance the broker rejects an order outright.")
    fractional: bool = False
    allow_short: bool = False


@dataclass
class _Bracket:
    entry_id: str
    phase: int
    entry: float
    stop: float
    target1: float
    target2: float
    armed_after: datetime  # the entry's fill bar: checks start on the next one
    side: int = 1  # 1 a long's bracket, -1 a short's (stop above, targets below)


@dataclass
class _Order:
    request: OrderRequest
    state: OrderState
    rng: random.Random
    not_before: datetime | None = None  # when it was sent: bars opening earlier cannot fill it
    cancel_at: datetime | None = None  # canceled at this instant: bars opening later cannot fill it
    whole: bool = False  # a flatten's close: takes the whole position held on its side at its fill


@dataclass
class SimulatedBroker:
    """In-memory broker state; `on_bar` advances time by one bar of every symbol given."""

    config: SimConfig = field(default_factory=SimConfig)
    cash: float = 100_000.0
    name: str = "simulated"
    now: datetime | None = None  # the last bar lived through
    placed_at: datetime | None = None  # the instant orders are being sent (the run's now), if later than `now`
    timeframe: str | None = None  # of the bars lived through (their "timeframe" column); None: daily
    _positions: dict[str, float] = field(default_factory=dict)
    _marks: dict[str, float] = field(default_factory=dict)
    _orders: dict[str, _Order] = field(default_factory=dict)
    _brackets: dict[str, _Bracket] = field(default_factory=dict)
    _bar_equity: float = 0.0  # the equity at the bar's open, before its orders: what entries are sized on
    fills: list[Fill] = field(default_factory=list)

    # -- the Broker interface
    def account(self) -> Account:
        # The positions' values added in symbol order, then the cash: the backtest's equity (vectorbt's
        # value), to the last bit; the order the positions were opened in would change the last digits.
        held = 0.0
        for s in sorted(self._positions):
            held += self._positions[s] * self._marks.get(s, 0.0)
        return Account(cash=self.cash, equity=self.cash + held, buying_power=max(self.cash, 0.0))

    def positions(self) -> dict[str, float]:
        return {s: q for s, q in self._positions.items() if q != 0}

    def submit(self, order: OrderRequest) -> OrderState:
        known = self._orders.get(order.client_order_id)
        if known is not None:
            return known.state  # the same decision sent again: nothing new
        rng = random.Random(_seed(self.config.seed, order.client_order_id))
        state = OrderState(
            client_order_id=order.client_order_id,
            broker_order_id=f"sim-{len(self._orders) + 1}",
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            status=OrderStatus.NEW,
            submitted_at=self.now,
        )
        if rng.random() < self.config.reject_prob:
            state = state.model_copy(update={"status": OrderStatus.REJECTED, "reason": "rejected by the simulated venue"})
        self._orders[order.client_order_id] = _Order(order, state, rng, self.placed_at)
        return state

    def get_order(self, client_order_id: str) -> OrderState | None:
        known = self._orders.get(client_order_id)
        return known.state if known else None

    def open_orders(self) -> list[OrderState]:
        return [o.state for o in self._orders.values() if o.state.status.is_open]

    def cancel(self, broker_order_id: str) -> None:
        """Cancels one open order (`AlpacaBroker.cancel`'s contract: one no longer open raises BrokerError)."""
        for order in self._orders.values():
            if order.state.broker_order_id == broker_order_id and order.state.status.is_open:
                order.state = order.state.model_copy(update={"status": OrderStatus.CANCELED, "reason": "canceled"})
                return
        raise BrokerError(f"simulated: no open order {broker_order_id}")

    def prices(self) -> dict[str, float]:
        """The last price of each symbol the broker has seen (its marks)."""
        return dict(self._marks)

    def cancel_all(self) -> int:
        """Cancels every open order at `placed_at` (module docstring): one whose fill bar had opened by
        then stays open until the broker lives through that bar. Returns how many were canceled so."""
        open_ = self._open()
        self._cancel_at(open_, self.placed_at)
        return len(open_)

    def close_all(self) -> list[OrderState]:
        """Cancels every open order at `placed_at` and sends market orders that flatten what every
        position will be once the orders whose fill bar had opened by then are filled (module docstring).

        A close already pending is kept, not replaced: on daily bars the bar it waits for reaches the
        lake only after the next day's flatten, and a replacement (sent later) could only fill at a
        later bar still, so the position would never be flattened."""
        at = self.placed_at
        kept = [o for o in self._open() if o.whole or self._filled_by(o, at)]
        self._cancel_at([o for o in self._open() if not o.whole], at)
        self._brackets.clear()
        stamp = f"{self.now.isoformat() if self.now else 'start'}|{at.isoformat() if at else ''}"
        out = [o.state for o in kept if o.whole]  # earlier flattens' closes, still to fill
        for symbol, qty in sorted(self._projected(kept).items()):
            if abs(qty) < 1e-9:
                continue
            side = Side.SELL if qty > 0 else Side.BUY
            cid = f"close-{hashlib.sha256(f'{symbol}|{stamp}'.encode()).hexdigest()[:24]}"
            out.append(self.submit(OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=abs(qty), reduce_only=True)))
            self._orders[cid].whole = True
        return out

    def _filled_by(self, order: _Order, at: datetime | None) -> bool:
        """Whether `order`'s fill bar (the first it can fill at: after the last bar lived through, not
        before it was sent) had opened by `at` (or by its own cancel, if earlier): if so, by the fill
        rule, it is filled at that bar's open, whatever is said at `at`."""
        if at is None:
            return False
        if order.cancel_at is not None:
            at = min(at, order.cancel_at)
        floor = [t for t in (order.not_before, self.now + timedelta(microseconds=1) if self.now else None) if t is not None]
        if not floor:
            return False
        opens = next_bar_open(max(floor), TIMEFRAMES.get(self.timeframe or "1d", timedelta(days=1)))
        return opens is not None and opens <= at

    def _cancel_at(self, orders: list[_Order], at: datetime | None) -> None:
        """Cancels `orders` at `at`: now, unless a fill bar had opened by then (then at the first bar after `at`)."""
        for order in orders:
            if self._filled_by(order, at):
                order.cancel_at = at if order.cancel_at is None or at is None else min(order.cancel_at, at)
            else:
                order.state = order.state.model_copy(update={"status": OrderStatus.CANCELED, "reason": "cancel all"})

    def _projected(self, orders: list[_Order]) -> dict[str, float]:
        """Each position once `orders` (still to fill, at bars before any new order's) are filled, exits
        first as within a bar. Its sign is what matters: a flatten's close takes the whole position then."""
        pos = dict(self.positions())
        for order in sorted(orders, key=self._is_entry):
            req, state = order.request, order.state
            held, sign = pos.get(req.symbol, 0.0), 1 if req.side == Side.BUY else -1
            qty = state.quantity - state.filled_quantity
            if order.whole or req.reduce_only:
                after = held + sign * min(qty if not order.whole else abs(held), abs(held)) if held * sign < 0 else held
            elif req.size is not None and state.filled_quantity == 0:
                after = sign * qty  # sized at its fill: on its side
            else:
                after = held + sign * qty
            if after < 0 and not self.config.allow_short:
                after = min(held, 0.0) if held < 0 else 0.0
            pos[req.symbol] = after
        return pos

    def clock(self) -> Clock:
        now = self.now or datetime.fromtimestamp(0).astimezone()
        return Clock(timestamp=now, is_open=True, next_open=now, next_close=now)

    # -- persistence: a scheduled simulation continues where the last run stopped
    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue later (not the fill history: the ledger has it)."""
        return {
            "config": self.config.model_dump(),
            "cash": self.cash,
            "now": self.now.isoformat() if self.now else None,
            "timeframe": self.timeframe,
            "positions": self._positions,
            "marks": self._marks,
            "orders": [
                {
                    "request": o.request.model_dump(mode="json"),
                    "state": o.state.model_dump(mode="json"),
                    "rng": _rng_state(o.rng),
                    "not_before": o.not_before.isoformat() if o.not_before else None,
                    "cancel_at": o.cancel_at.isoformat() if o.cancel_at else None,
                    "whole": o.whole,
                }
                for o in self._orders.values()
            ],
            "brackets": {s: {**vars(b), "armed_after": b.armed_after.isoformat()} for s, b in self._brackets.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SimulatedBroker:
        broker = cls(SimConfig(**state["config"]), cash=float(state["cash"]))
        broker.now = datetime.fromisoformat(state["now"]) if state["now"] else None
        broker.timeframe = state.get("timeframe")
        broker._positions = {k: float(v) for k, v in state["positions"].items()}
        broker._marks = {k: float(v) for k, v in state["marks"].items()}
        for item in state["orders"]:
            rng = random.Random()
            rng.setstate(_rng_from(item["rng"]))
            request = OrderRequest.model_validate(item["request"])
            not_before = datetime.fromisoformat(item["not_before"]) if item.get("not_before") else None
            cancel_at = datetime.fromisoformat(item["cancel_at"]) if item.get("cancel_at") else None
            # a close saved before `whole` was kept is one (its id says so): kept by the next flatten, not replaced
            whole = bool(item.get("whole", request.reduce_only and request.client_order_id.startswith("close-")))
            order = _Order(request, OrderState.model_validate(item["state"]), rng, not_before, cancel_at, whole)
            broker._orders[request.client_order_id] = order
        for symbol, b in state["brackets"].items():
            broker._brackets[symbol] = _Bracket(**{**b, "armed_after": datetime.fromisoformat(b["armed_after"])})
        return broker

    # -- time
    def on_bar(self, bars: dict[str, dict[str, Any]]) -> list[Fill]:
        """One bar per symbol (ts, open, high, low, close): fills open orders, then runs brackets."""
        if not bars:
            return []
        ts = max(b["ts"] for b in bars.values())
        timeframe = next(iter(bars.values())).get("timeframe")
        self.timeframe = str(timeframe) if timeframe else self.timeframe
        for order in self._open():  # canceled before this bar opened: it cannot fill here or later
            if order.cancel_at is not None and order.request.symbol in bars and bars[order.request.symbol]["ts"] > order.cancel_at:
                order.state = order.state.model_copy(update={"status": OrderStatus.CANCELED, "reason": "cancel all"})
        for symbol in bars:
            self._marks[symbol] = float(bars[symbol]["open"])  # the equity an entry may use is valued at the open
        self._bar_equity = self._worth()
        new: list[Fill] = []
        orders = [o for o in self._open() if o.request.symbol in bars and _sent_by(o, bars[o.request.symbol]["ts"])]
        busy = {o.request.symbol for o in orders}  # a bar with an order on the symbol has no bracket exit (the open settles it)
        armed = [(sym, b) for sym, b in self._brackets.items() if sym in bars and sym not in busy and bars[sym]["ts"] > b.armed_after]
        # Exits first (brackets' included), so the cash they free pays for the bar's entries; each
        # group sells first, then buys, by value, ties by symbol: the backtest's order.
        work: list[tuple[bool, float, str, _Order | _Bracket]] = [(self._is_entry(o), self._order_value(o), o.request.symbol, o) for o in orders]
        work += [(False, -b.side * abs(self._positions.get(sym, 0.0)) * self._marks[sym], sym, b) for sym, b in armed]
        for _entry, _value, symbol, item in sorted(work, key=lambda w: (w[0], w[1], w[2])):
            fill = self._fill_order(item, bars[symbol]) if isinstance(item, _Order) else self._bracket_bar(symbol, item, bars[symbol])
            if fill is not None:
                new.append(fill)
        for symbol, bar in bars.items():
            self._marks[symbol] = float(bar["close"])
        self.now = ts
        self.fills.extend(new)
        return new

    def _worth(self) -> float:
        """From the cash, each position at its mark added in symbol order: the backtest's bar equity
        (`backtests.order_sim`, the reference loop), to the last bit."""
        equity = self.cash
        for s in sorted(self._positions):
            equity += self._positions[s] * self._marks.get(s, 0.0)
        return equity

    def _open(self) -> list[_Order]:
        return [o for o in self._orders.values() if o.state.status.is_open]

    def _is_entry(self, order: _Order) -> bool:
        """A sized entry (a reversal included), or an order that does not reduce the position held."""
        req, held = order.request, self._positions.get(order.request.symbol, 0.0)
        if req.size is not None and order.state.filled_quantity == 0:
            return True
        return not controls.reduces(held, 1.0 if req.side == Side.BUY else -1.0)

    def _order_value(self, order: _Order) -> float:
        """Signed value of what `order` would trade at the mark (sells negative): the sort key."""
        req, mark = order.request, self._marks.get(order.request.symbol, 0.0)
        if req.size is not None and order.state.filled_quantity == 0:
            sign = 1 if req.side == Side.BUY else -1
            return sign * req.size * self._bar_equity - self._positions.get(req.symbol, 0.0) * mark
        qty = order.state.quantity - order.state.filled_quantity
        return (qty if req.side == Side.BUY else -qty) * mark

    def _fee(self, price: float) -> float:
        """Commission as a fraction of the traded value at `price`, the order's unslipped price."""
        return self.config.commission_bps / 1e4 + self.config.commission_per_share / price

    def _fill_order(self, order: _Order, bar: dict[str, Any]) -> Fill | None:
        req, state = order.request, order.state
        if req.type == OrderType.LIMIT and req.limit_price is not None:
            reachable = bar["low"] <= req.limit_price if req.side == Side.BUY else bar["high"] >= req.limit_price
            if not reachable:
                return None
        held = self._positions.get(req.symbol, 0.0)
        if order.whole:  # a flatten's close: the whole position held on its side now
            target = abs(held) if held != 0 and (held > 0) == (req.side == Side.SELL) else 0.0
            if target <= 0:
                order.state = state.model_copy(update={"status": OrderStatus.CANCELED, "reason": "nothing held to close at the fill"})
                return None
            state = order.state = state.model_copy(update={"quantity": state.filled_quantity + target})
        open_ = float(bar["open"])
        fee = self._fee(open_)
        price = self._slipped(open_, req.side)
        if req.size is not None and state.filled_quantity == 0:
            sized, capped = self._sized_entry(req, held, price, open_, fee)
            if req.side == Side.BUY:  # the rule's own cap: a buy never takes more than the cash there is
                sized = min(sized, self._whole(self._affordable(price, fee)))
            if sized <= 0:
                why = CAPPED_AT_FILL if capped else "the entry sizes to 0 shares at the fill"
                order.state = state.model_copy(update={"status": OrderStatus.CANCELED, "reason": why})
                return None
            state = order.state = state.model_copy(update={"quantity": sized, **({"reason": CAPPED_AT_FILL} if capped else {})})
        elif req.caps is not None and state.filled_quantity == 0:
            # The caps re-size a fixed entry at its fill as they size one with a `size`: what they
            # leave is the order (the rest is not a remainder the account could have filled).
            within = self._within_caps(req, state.quantity, held, price, open_, fee)
            if within <= 0:
                order.state = state.model_copy(update={"status": OrderStatus.CANCELED, "reason": CAPPED_AT_FILL})
                return None
            if within < state.quantity:
                state = order.state = state.model_copy(update={"quantity": within, "reason": CAPPED_AT_FILL})
        remaining = state.quantity - state.filled_quantity
        qty = remaining
        if order.rng.random() < self.config.partial_fill_prob:
            qty = remaining * (self.config.partial_fill_min + (1 - self.config.partial_fill_min) * order.rng.random())
            if not self.config.fractional:
                qty = min(remaining, max(1.0, math.floor(qty)))  # a partial fill is at least one share
        wanted = qty
        if req.reduce_only:
            qty = min(qty, abs(held)) if (held > 0) == (req.side == Side.SELL) else 0.0
        if req.type == OrderType.LIMIT and req.limit_price is not None:
            price = min(price, req.limit_price) if req.side == Side.BUY else max(price, req.limit_price)
        if req.side == Side.BUY:
            qty = min(qty, self._affordable(price, fee))
        elif not self.config.allow_short:
            qty = min(qty, max(held, 0.0))  # no naked shorts without a margin account
        if req.size is None:
            qty = self._entry_cap(req, qty, held, price, open_, fee)
        qty = self._whole(qty)
        if qty <= 0:
            why = "insufficient cash" if req.side == Side.BUY else "insufficient equity to short" if self.config.allow_short else "nothing to sell (no shorting)"
            order.state = state.model_copy(update={"status": OrderStatus.REJECTED, "reason": why})
            return None
        fill = self._book(req.client_order_id, req.symbol, req.side, qty, price, fee, bar["ts"], suffix=str(len(self.fills)))
        done = state.filled_quantity + qty
        avg = ((state.avg_fill_price or 0.0) * state.filled_quantity + price * qty) / done
        update: dict[str, Any] = {"filled_quantity": done, "avg_fill_price": avg}
        if done >= state.quantity - 1e-9:
            update["status"] = OrderStatus.FILLED
        elif qty < wanted - 1e-9:  # cut to what the equity or the cash pays for: no remainder later
            update |= {"status": OrderStatus.CANCELED, "reason": f"remainder {state.quantity - done:g} canceled: cut at the fill to what the account pays for"}
        else:
            update["status"] = OrderStatus.PARTIALLY_FILLED  # a partial fill: the rest fills on later bars
        order.state = state.model_copy(update=update)
        side = 1 if req.side == Side.BUY else -1
        if (req.stop or req.target1 or req.target2) and held == 0:  # an entry from flat, either side
            self._brackets[req.symbol] = _Bracket(
                req.client_order_id, FULL, float(bar["open"]), _nan(req.stop), _nan(req.target1), _nan(req.target2), bar["ts"], side
            )
        else:
            bracket = self._brackets.get(req.symbol)
            if bracket is not None and self._positions.get(req.symbol, 0.0) * bracket.side <= 0:
                self._brackets.pop(req.symbol)  # an exit signal closed it: the bracket goes with it
        return fill

    def _bracket_bar(self, symbol: str, b: _Bracket, bar: dict[str, Any]) -> Fill | None:
        phase, action, price = bracket_step(
            b.phase, b.entry, b.stop, b.target1, b.target2, float(bar["open"]), float(bar["high"]), float(bar["low"]), b.side
        )
        b.phase = phase
        if phase == FLAT:
            del self._brackets[symbol]
        held = max(self._positions.get(symbol, 0.0) * b.side, 0.0)  # shares on the bracket's side
        qty = half_of(held, self.config.fractional) if action == EXIT_HALF else held if action == EXIT_ALL else 0.0
        side = Side.SELL if b.side > 0 else Side.BUY
        fill_price = self._slipped(price, side)
        fee = self._fee(price)
        if side == Side.BUY:  # covering a short takes cash, like any buy
            qty = min(qty, self._affordable(fill_price, fee))
            qty = qty if self.config.fractional else float(math.floor(qty + 1e-9))
        if qty <= 0:
            return None
        leg = "t1" if action == EXIT_HALF else "exit"
        return self._book(f"{b.entry_id}-{leg}", symbol, side, qty, fill_price, fee, bar["ts"], suffix=leg)

    def _book(self, cid: str, symbol: str, side: Side, qty: float, price: float, fee: float, ts: datetime, suffix: str) -> Fill:
        commission = qty * price * fee
        fill = Fill(
            fill_id=f"{cid}-{suffix}-{ts.isoformat()}",
            client_order_id=cid,
            symbol=symbol,
            side=side,
            quantity=qty,
            price=price,
            commission=commission,
            ts=ts,
        )
        self.cash -= fill.signed_quantity * price + commission
        self._positions[symbol] = self._positions.get(symbol, 0.0) + fill.signed_quantity
        if abs(self._positions[symbol]) < 1e-12:
            self._positions[symbol] = 0.0
        return fill

    def _slipped(self, price: float, side: Side) -> float:
        slip = self.config.slippage_bps / 1e4
        return price * (1 + slip) if side == Side.BUY else price * (1 - slip)

    def _at_open(self, symbol: str, held: float, sign: int, price: float, open_: float, fee: float, sector: tuple[str, ...]) -> tuple[float, float, float]:
        """The account now, at the bar's open marks (summed in symbol order, as the backtest sums its
        columns): the equity after closing `held` (`strategies.entries.after_closing`), the gross
        value of the other symbols' positions, and of those in `sector`."""
        equity, others, peers = self.cash, 0.0, 0.0
        for s in sorted(self._positions):
            value = self._positions[s] * self._marks.get(s, 0.0)
            equity += value
            if s != symbol:
                others += abs(value)
                if s in sector:
                    peers += abs(value)
        return after_closing(equity, held, sign, price, open_, fee, 0.0), others, peers

    def _capped(self, caps: FillCaps | None, total: float, held: float, left: float, peers: float, price: float) -> float:
        """`total` shares on the entry's side, cut by the order's caps at the fill (`capped_at_fill`)."""
        if caps is None:
            return total
        step = FRACTION_STEP if self.config.fractional else 1.0
        return capped_at_fill(total, held, left, price, peers, caps.max_position_pct, caps.max_sector_pct, step)

    def _sized_entry(self, req: OrderRequest, held: float, price: float, open_: float, fee: float) -> tuple[float, bool]:
        """Shares an entry of `size` trades at the fill: to side x `entry_shares` of the bar's equity
        after closing an opposite position, at most the free cash, within the order's caps (the
        backtest's `order_sim`); and whether the caps cut it."""
        sign = 1 if req.side == Side.BUY else -1
        available = after_closing(self._bar_equity, held, sign, price, open_, fee, 0.0)
        left, others, peers = self._at_open(req.symbol, held, sign, price, open_, fee, req.caps.sector if req.caps else ())
        shares = entry_shares(available, req.size or 0.0, price, fee, 0.0, not self.config.fractional, free_cash(left, others))
        capped = self._capped(req.caps, shares, max(sign * held, 0.0), left, peers, price)
        return capped - sign * held, capped < shares

    def _entry_cap(self, req: OrderRequest, qty: float, held: float, price: float, open_: float, fee: float) -> float:
        """`qty` cut so that its entry part follows `strategies.entries` with size 1 (module
        docstring) and the order's caps (`_within_caps`); an order that only closes is left as it
        is, and a buy adding to a long is capped by the cash, not by size 1."""
        sign = 1 if req.side == Side.BUY else -1
        closing = min(qty, max(-sign * held, 0.0))  # shares that close a position held against the order
        if qty > closing and not (sign > 0 and held > 0):
            available = after_closing(self._bar_equity, held, sign, price, open_, fee, 0.0)
            left, others, _ = self._at_open(req.symbol, held, sign, price, open_, fee, ())
            most = entry_shares(available, 1.0, price, fee, 0.0, not self.config.fractional, free_cash(left, others))
            qty = min(qty, closing + max(most - max(sign * held, 0.0), 0.0))
        return self._within_caps(req, qty, held, price, open_, fee)

    def _within_caps(self, req: OrderRequest, qty: float, held: float, price: float, open_: float, fee: float) -> float:
        """`qty` with its entry part cut by the order's caps at the fill (`capped_at_fill`); exactly
        `qty` when they do not bind, or when the order carries none or only closes."""
        sign = 1 if req.side == Side.BUY else -1
        closing = min(qty, max(-sign * held, 0.0))
        if req.caps is None or qty <= closing:
            return qty
        on_side = max(sign * held, 0.0)
        left, _, peers = self._at_open(req.symbol, held, sign, price, open_, fee, req.caps.sector)
        total = on_side + qty - closing
        capped = self._capped(req.caps, total, on_side, left, peers, price)
        return closing + max(capped - on_side, 0.0) if capped < total else qty

    def _whole(self, qty: float) -> float:
        return qty if self.config.fractional else float(math.floor(qty + 1e-9))

    def _affordable(self, price: float, fee: float) -> float:
        return max(self.cash, 0.0) / (1 + fee) / price  # vectorbt's own cap on a buy


def next_bar_open(after: datetime, bar: timedelta) -> datetime | None:
    """The open of the first bar of length `bar` that opens at or after `after`: a daily bar at its
    session's open, a shorter one every `bar` from the session's open to its close; None past the
    calendar's end."""
    day = after.astimezone(ZoneInfo(EXCHANGE_TZ)).date()
    for session in trading_days(day - timedelta(days=1), day + timedelta(days=14)):
        open_, close = session_bounds(session)
        if open_ >= after:
            return open_
        if bar < timedelta(days=1) and after < close:
            t = open_ + math.ceil((after - open_) / bar) * bar
            if t < close:
                return t
    return None


def _sent_by(order: _Order, bar_open: datetime) -> bool:
    """An order fills only on a bar that opens at or after the instant it was sent."""
    return order.not_before is None or bar_open >= order.not_before


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from(saved: list[Any]) -> tuple[Any, ...]:
    return (saved[0], tuple(saved[1]), saved[2])


def _seed(seed: int, client_order_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{client_order_id}".encode()).digest()[:8], "big")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


