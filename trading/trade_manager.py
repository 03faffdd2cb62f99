"""The trade manager on Alpaca: an entry's bracket followed exactly as `strategies/brackets.py` says.

Once an entry with a stop (`OrderRequest.stop`, recorded by the executor) has filled `F` shares at
`E`, its exits are (long shown; a short's are mirrored, buys):
- leg `t1`: half of `F` (rounded down, `brackets.half_of`) as an OCO order: take-profit at target 1,
  stop leg at the stop;
- leg `rest`: the other shares as an OCO order at target 2 and the stop (a plain stop without
  target 2; without target 1 this leg is everything and target 2 exits it all, as in phase 1);
- when `t1`'s take-profit has filled: the rest's stop is replaced by a stop at `E` (leg `be`, the
  breakeven stop of phase 2); target 2 or that stop then ends the position.
Each exit quantity is reserved once at Alpaca (no sell can exceed the position), and the stop always
covers every share. On a broker the levels fire within the bar, so one bar may see target 1 and
target 2 both (the backtest spreads them over two bars).

One share (any odd quantity's half rounded down to 0): there is no half to sell, and the backtest
(`backtests/order_sim.py`, like the simulated broker) still moves to phase 2 when target 1 is
touched: nothing is sold, the stop moves to the entry price, target 2 then exits the share. No order
fills at target 1 here, so the manager sees that touch in the bars (`extremes`: the highest high and
lowest low of the bars opening after the entry's fill bar, for a short the low) and moves the stop
then. Without bars (`extremes=None`) it cannot see the touch: the stop stays, and a warning says so.

Idempotent and restartable: the manager keeps no state. Every pass reads the entry and its legs
from Alpaca by client order ids derived from the entry's id and the leg (`leg_id`), sends what is
missing and records what happened. A restart, a second process (the stream and the polling
sensor) or a 504 after Alpaca accepted cannot send a leg twice: the id is looked up before any send.
The ledger gets one ORDER_SUBMITTED per leg and one FILL per new filled quantity of every order
(entry included; fill id `<broker order id>@<cumulative quantity>`), so replaying it gives the
broker's position. A bracket whose legs are all over is closed with a CANCEL event.

An account split between pipelines (`trading.brokers.split`): an entry in a pipeline's book (its
ORDER_SUBMITTED carries the pipeline id) is followed the same way, under that pipeline's prefix. The
entry and its legs are the broker's `<pipeline id>.<client id>` orders, each leg is sized from that
entry's own filled quantity (two pipelines long one symbol each get their own legs, and no leg sells
the other's shares), and every event goes to the pipeline's sub-account under its own ids, so the
pipeline's `PipelineBroker.sync` books the same fills under the same event ids (written once).

Driven by alpaca-py's `TradingStream` (each trade update triggers a pass for its symbol; every
(re)connection triggers a full pass, since Alpaca does not replay updates missed while disconnected;
`follow` runs it with a periodic pass, `quantlake trade-manager`) and by polling (`sync_all`, run by
`orchestration/trade_manager_sensor.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from alpaca.trading.models import TradeUpdate
from alpaca.trading.stream import TradingStream

from strategies.brackets import half_of
from trading.accounts import PIPELINE_KEY, SubAccount
from trading.brokers.alpaca import OrderView, tick
from trading.brokers.base import BrokerError, Fill, OrderState, OrderStatus
from trading.brokers.split import tagged
from trading.events import CancelPayload, Event, EventType, FillPayload, OrderSubmittedPayload
from trading.execution import fill_event_id
from trading.ledger.store import Ledger
from trading.models import Mode, Side

log = logging.getLogger(__name__)

T1, REST, BREAKEVEN = "t1", "rest", "be"
_EPS = 1e-9
_MANAGED_MODES = {Mode.PAPER.value, Mode.LIVE.value}
BAR = timedelta(minutes=1)  # the bars `extremes` reads: target 1 counts from the bar after the fill's

Extremes = Callable[[str, datetime, datetime], "tuple[float, float] | None"]
"""(highest high, lowest low) of `symbol`'s bars opening in [start, end); None when there is none."""


def leg_id(entry_id: str, leg: str) -> str:
    """The client order id of an entry's leg: the same entry and leg always give the same id."""
    return f"{entry_id}-{leg}"


def _event_id(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class ExitBroker(Protocol):
    """What the manager needs from the broker (`AlpacaBroker`)."""

    name: str

    def order_view(self, client_order_id: str) -> OrderView | None: ...

    def submit_exit(
        self, client_order_id: str, symbol: str, side: Side, quantity: float, *, stop: float, target: float | None
    ) -> OrderState: ...

    def replace_stop(self, broker_order_id: str, client_order_id: str, stop_price: float) -> OrderState: ...

    def cancel(self, broker_order_id: str) -> None: ...

    def positions(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Bracket:
    """An entry to manage: its client order id (the position's identity), side and levels."""

    entry_id: str
    symbol: str
    side: Side
    stop: float
    target1: float | None = None
    target2: float | None = None
    pipeline: str | None = None  # on a split account: the pipeline whose book the entry is in

    @property
    def exit_side(self) -> Side:
        return Side.SELL if self.side == Side.BUY else Side.BUY

    def wire(self, client_order_id: str) -> str:
        """The id the broker has for one of this bracket's orders (a pipeline's carry its prefix)."""
        return client_order_id if self.pipeline is None else tagged(self.pipeline, client_order_id)

    @property
    def key(self) -> str:
        """The bracket's identity on the account: two pipelines' same decision has the same entry id."""
        return self.wire(self.entry_id)


@dataclass
class _Recorded:
    """What the ledger already holds: fills per broker order, legs, closed brackets."""

    filled: dict[str, tuple[float, float]] = field(default_factory=dict)  # broker id -> (qty, notional)
    legs: set[str] = field(default_factory=set)
    first_fill: dict[str, datetime] = field(default_factory=dict)  # broker id -> when its first fill was booked


class TradeManager:
    """Places and moves the exits of the ledger's bracketed entries on Alpaca; see the module doc."""

    def __init__(
        self,
        broker: ExitBroker,
        ledger: Ledger,
        *,
        run_id: str,
        mode: Mode = Mode.PAPER,
        clock: Callable[[], datetime],
        extremes: Extremes | None = None,
    ) -> None:
        self.broker = broker
        self.extremes = extremes
        self.ledger = ledger
        self.run_id = run_id
        self.mode = mode
        self.clock = clock
        self._lock = threading.Lock()  # the stream's passes and a reconnection's pass never interleave
        self._covered: dict[str, float] = {}  # symbol -> shares under a live stop of ours (this pass)
        self._warned: set[str] = set()  # one-share entries whose target 1 no bars can show (warned once)
        self.unprotected: dict[str, float] = {}  # after a full pass: symbol -> shares held without a stop

    # -- reading the ledger
    def brackets(self, symbol: str | None = None, *, pipeline: str | None | bool = True) -> list[Bracket]:
        """Entries with a stop sent in paper or live mode whose bracket is not closed yet; a split
        account's by pipeline too (`pipeline`: True for all, None for the account's own, or one id)."""
        found: dict[tuple[str | None, str], Bracket] = {}
        closed: set[tuple[str | None, str]] = set()
        for event in self.ledger.events(types=[EventType.ORDER_SUBMITTED, EventType.CANCEL], symbol=symbol):
            owner = event.payload.get(PIPELINE_KEY)
            if pipeline is not True and owner != pipeline:
                continue
            p = event.typed()
            if isinstance(p, CancelPayload):
                if p.bracket_closed:
                    closed.add((owner, p.bracket_closed))
                continue
            assert isinstance(p, OrderSubmittedPayload)
            if event.mode.value not in _MANAGED_MODES or p.bracket_leg or not p.stop:
                continue
            cid = p.client_order_id
            if not cid or (owner, cid) in found or p.symbol is None or p.side is None:
                continue
            found[(owner, cid)] = Bracket(
                entry_id=cid, symbol=p.symbol, side=p.side, stop=p.stop, target1=p.target1 or None, target2=p.target2 or None,
                pipeline=owner,
            )  # fmt: skip
        return [b for key, b in found.items() if key not in closed]

    def _book(self, bracket: Bracket) -> Ledger:
        """Where the bracket's events go and are read: the ledger, or its pipeline's sub-account (stamped with its id)."""
        return self.ledger if bracket.pipeline is None else SubAccount(self.ledger, bracket.pipeline)

    def _recorded(self, bracket: Bracket) -> _Recorded:
        out = _Recorded()
        for event in self._book(bracket).events(types=[EventType.FILL, EventType.ORDER_SUBMITTED], symbol=bracket.symbol):
            p = event.typed()
            if isinstance(p, OrderSubmittedPayload):
                if p.bracket_leg and p.client_order_id and event.payload.get(PIPELINE_KEY) == bracket.pipeline:
                    out.legs.add(p.client_order_id)
                continue
            assert isinstance(p, FillPayload)
            broker_id, sep, _cum = (p.fill_id or "").rpartition("@")
            if not sep:
                continue
            qty, notional = out.filled.get(broker_id, (0.0, 0.0))
            out.filled[broker_id] = (qty + p.quantity, notional + p.quantity * p.price)
            ts = p.ts or event.as_of
            if ts is not None and broker_id not in out.first_fill:
                out.first_fill[broker_id] = ts
        return out

    # -- writing the ledger
    def _emit(self, type_: EventType, payload: dict[str, Any], *, symbol: str, event_id: str, book: Ledger | None = None) -> None:
        now = self.clock()
        (book or self.ledger).emit(
            Event(
                type=type_,
                run_id=self.run_id,
                mode=self.mode,
                payload=payload,
                symbol=symbol,
                as_of=now,
                recorded_at=now,
                event_id=event_id,
            )
        )

    def _record_fills(self, view: OrderView, booked_as: str, recorded: _Recorded, book: Ledger) -> None:
        """A FILL for what `view` filled beyond what the ledger has (its average gives the new part's price)."""
        state = view.state
        cum, avg = state.filled_quantity, state.avg_fill_price
        done_qty, done_notional = recorded.filled.get(state.broker_order_id, (0.0, 0.0))
        if avg is None or cum <= done_qty + _EPS:
            return
        qty = cum - done_qty
        price = (avg * cum - done_notional) / qty
        fill = Fill(
            fill_id=f"{state.broker_order_id}@{cum:g}",
            client_order_id=booked_as,
            symbol=state.symbol,
            side=state.side,
            quantity=qty,
            price=price,
            ts=self.clock(),
        )
        self._emit(EventType.FILL, fill.model_dump(mode="json"), symbol=state.symbol, event_id=fill_event_id(fill.fill_id), book=book)
        recorded.filled[state.broker_order_id] = (cum, avg * cum)
        recorded.first_fill.setdefault(state.broker_order_id, fill.ts)

    def _record_leg(self, bracket: Bracket, leg: str, view: OrderView, recorded: _Recorded, **extra: Any) -> None:
        cid = leg_id(bracket.entry_id, leg)
        if cid in recorded.legs:
            return
        state = view.state
        payload = {
            "client_order_id": cid,
            "broker_order_id": state.broker_order_id,
            "symbol": state.symbol,
            "side": state.side.value,
            "quantity": state.quantity,
            "status": state.status.value,
            "bracket_leg": leg,
            "position": bracket.entry_id,
            "limit_price": view.limit_price,
            "stop_price": view.stop_price if view.type == "stop" else (view.legs[0].stop_price if view.legs else None),
            "reduce_only": True,
            **extra,
        }
        self._emit(EventType.ORDER_SUBMITTED, payload, symbol=state.symbol, event_id=_event_id("leg", cid), book=self._book(bracket))
        recorded.legs.add(cid)

    # -- one pass
    def sync_all(self, symbol: str | None = None) -> dict[str, list[str]]:
        """One pass over every open bracket (of `symbol`): what each did, by entry id."""
        out: dict[str, list[str]] = {}
        with self._lock:
            self._covered = {}
            brackets = self.brackets(symbol)
            for bracket in brackets:
                self._covered.setdefault(bracket.symbol, 0.0)
                try:
                    out[bracket.key] = self._sync(bracket)
                except BrokerError as error:  # the next pass asks again: the ids make that safe
                    log.warning("trade manager: %s %s: %s", bracket.symbol, bracket.key, error)
                    out[bracket.key] = [f"error: {error}"]
            if symbol is None:
                self.unprotected = self._check_protection() if brackets else {}
        return out

    def _check_protection(self) -> dict[str, float]:
        """Shares of the managed symbols the account holds beyond our live stops (a partly filled
        entry, a failed leg, a position added to by hand): each is logged as a warning."""
        try:
            held = self.broker.positions()
        except BrokerError as error:
            log.warning("trade manager: positions unreadable: %s", error)
            return {}
        gaps = {s: abs(held.get(s, 0.0)) - covered for s, covered in self._covered.items()}
        gaps = {s: gap for s, gap in gaps.items() if gap > _EPS}
        for s, gap in sorted(gaps.items()):
            log.warning("trade manager: %s: %g share(s) held without a stop", s, gap)
        return gaps

    def sync(self, bracket: Bracket) -> list[str]:
        with self._lock:
            return self._sync(bracket)

    def _exit(self, bracket: Bracket, leg: str, qty: float, target: float | None, recorded: _Recorded) -> OrderView | None:
        cid = bracket.wire(leg_id(bracket.entry_id, leg))
        self.broker.submit_exit(cid, bracket.symbol, bracket.exit_side, qty, stop=bracket.stop, target=target)
        view = self.broker.order_view(cid)
        if view is not None:
            self._record_leg(bracket, leg, view, recorded, target=target)
        return view

    def _view(self, bracket: Bracket, leg: str | None = None) -> OrderView | None:
        """The entry (leg None) or one of its legs at the broker, by the id the broker has for it."""
        return self.broker.order_view(bracket.wire(bracket.entry_id if leg is None else leg_id(bracket.entry_id, leg)))

    def _sync(self, bracket: Bracket) -> list[str]:
        actions: list[str] = []
        book = self._book(bracket)
        recorded = self._recorded(bracket)
        entry = self._view(bracket)
        if entry is None:
            return ["entry not at the broker"]
        self._record_fills(entry, bracket.entry_id, recorded, book)
        # the entry's own fills size its legs (on a split account: this pipeline's order, never the account's position)
        filled, fill_price = entry.state.filled_quantity, entry.state.avg_fill_price
        if entry.state.status.is_open:
            return [f"entry open ({filled:g} filled): exits wait for it to finish"]
        if filled <= 0 or fill_price is None:
            self._close(bracket, "entry ended unfilled")
            return ["entry ended unfilled"]
        half = half_of(filled, False) if bracket.target1 is not None else 0.0
        legs: dict[str, OrderView | None] = {}
        for leg, qty, target in ((T1, half, bracket.target1), (REST, filled - half, bracket.target2)):
            if qty <= 0:
                continue
            view = self._view(bracket, leg)
            if view is None:
                view = self._exit(bracket, leg, qty, target, recorded)
                actions.append(f"{leg}: {bracket.exit_side.value} {qty:g} placed")
            elif leg_id(bracket.entry_id, leg) not in recorded.legs:
                self._record_leg(bracket, leg, view, recorded, target=target)  # sent by a pass that died
            legs[leg] = view
        t1, rest = legs.get(T1), legs.get(REST)
        breakeven = self._view(bracket, BREAKEVEN)
        stop = _open_stop(rest)
        if breakeven is None and stop is not None:
            t1_hit = t1 is not None and t1.state.status == OrderStatus.FILLED
            if not t1_hit and half <= 0 and bracket.target1 is not None:  # one share: nothing to sell at target 1
                t1_hit = self._target1_touched(bracket, entry.state.broker_order_id, recorded)
                if t1_hit:
                    actions.append(f"target 1 {bracket.target1:g} touched: {filled:g} share(s), none to sell")
            if t1_hit:
                level = tick(fill_price)  # the entry's average price, at Alpaca's increment
                self.broker.replace_stop(stop.state.broker_order_id, bracket.wire(leg_id(bracket.entry_id, BREAKEVEN)), level)
                breakeven = self._view(bracket, BREAKEVEN)
                actions.append(f"stop moved to breakeven {level:g}")
                rest = self._view(bracket, REST)
        if breakeven is not None:
            self._record_leg(bracket, BREAKEVEN, breakeven, recorded, replaces=leg_id(bracket.entry_id, REST))
        for leg, view in ((BREAKEVEN, breakeven), (T1, t1), (REST, rest)):  # be first: it may be rest's leg
            if view is None:
                continue
            # the stop leg of an OCO is booked under its order's leg id (its own id is Alpaca's)
            for order in (view, *view.legs):
                self._record_fills(order, leg_id(bracket.entry_id, leg), recorded, book)
        orders = [o for v in (t1, rest, breakeven) if v is not None for o in (v, *v.legs)]
        stops = {o.state.broker_order_id: o for o in orders if o.type == "stop" and o.state.status.is_open}
        covered = sum(o.state.quantity - o.state.filled_quantity for o in stops.values())
        self._covered[bracket.symbol] = self._covered.get(bracket.symbol, 0.0) + covered
        if orders and not any(o.state.status.is_open for o in orders):
            self._close(bracket, "every exit is over")
            actions.append("bracket closed")
        return actions

    def _target1_touched(self, bracket: Bracket, entry_broker_id: str, recorded: _Recorded) -> bool:
        """Did a bar after the entry's fill bar reach target 1 (a long's high, a short's low)?"""
        assert bracket.target1 is not None
        filled_at = recorded.first_fill.get(entry_broker_id)
        if self.extremes is None or filled_at is None:
            if bracket.key in self._warned:
                return False
            self._warned.add(bracket.key)
            log.warning(
                "trade manager: %s %s: one share, no bars to see target 1 %g: the stop stays at %g",
                bracket.symbol, bracket.key, bracket.target1, bracket.stop,
            )  # fmt: skip
            return False
        start = filled_at.replace(second=0, microsecond=0) + BAR
        now = self.clock()
        if start >= now:
            return False
        seen = self.extremes(bracket.symbol, start, now)
        if seen is None:
            return False
        high, low = seen
        return high >= bracket.target1 if bracket.side == Side.BUY else low <= bracket.target1

    def release(self, symbol: str, reason: str, *, pipeline: str | None = None) -> list[str]:
        """Cancels the open exits of `symbol`'s brackets (the account's own, or one pipeline's on a split
        account), so another exit (a strategy's sell, a flatten) may use the shares they reserve; the
        brackets are closed and nothing is placed again. Returns the canceled legs' broker ids."""
        canceled: list[str] = []
        with self._lock:
            for bracket in self.brackets(symbol, pipeline=pipeline):
                for leg in (T1, REST, BREAKEVEN):
                    view = self._view(bracket, leg)
                    if view is not None and view.state.status.is_open:
                        self.broker.cancel(view.state.broker_order_id)
                        canceled.append(bracket.wire(leg_id(bracket.entry_id, leg)))
                self._close(bracket, f"released: {reason}")
        return canceled

    def _close(self, bracket: Bracket, reason: str) -> None:
        payload = {"bracket_closed": bracket.entry_id, "reason": reason}
        event_id = _event_id("closed", bracket.entry_id)
        self._emit(EventType.CANCEL, payload, symbol=bracket.symbol, event_id=event_id, book=self._book(bracket))

    # -- the stream
    def on_trade_update(self, update: TradeUpdate) -> dict[str, list[str]]:
        """Any update of the account: a pass over that symbol's brackets (the update is a trigger, Alpaca the truth)."""
        return self.sync_all(update.order.symbol)

    def stream(self, broker: Any, url_override: str | None = None, *, reconnect_backoff_s: float = 1.0) -> TradingStream:
        """alpaca-py's `TradingStream` (from `AlpacaBroker.trading_stream`) wired to this manager; `run()` it."""
        stream: TradingStream = broker.trading_stream(url_override, stream_class=_ResyncingStream)
        assert isinstance(stream, _ResyncingStream)
        stream.on_connect = self.sync_all
        stream._reconnect_min_backoff = reconnect_backoff_s

        async def handler(update: TradeUpdate) -> None:
            try:
                await asyncio.to_thread(self.on_trade_update, update)
            except Exception:  # the stream must go on; the next pass or poll retries
                log.exception("trade manager: pass after %s %s failed", update.event, update.order.symbol)

        stream.subscribe_trade_updates(handler)
        return stream


def follow(
    manager: TradeManager,
    broker: Any,
    stop: threading.Event,
    *,
    stream_url: str | None = None,
    poll_s: float = 5.0,
) -> None:
    """Runs the stream and a pass every `poll_s` seconds until `stop` is set (a long-running process).

    The periodic pass covers what no update triggers: an entry that filled before its order was in
    the ledger (the executor records it after Alpaca answered), a pass that failed.
    """
    stream = manager.stream(broker, stream_url)
    thread = threading.Thread(target=stream.run, name="trade-updates", daemon=True)
    thread.start()
    try:
        while not stop.wait(poll_s):
            manager.sync_all()
    finally:
        if stream._loop is not None:
            stream.stop()
        thread.join(10)


def _open_stop(rest: OrderView | None) -> OrderView | None:
    """The rest leg's stop (the order itself, or an OCO's stop leg) while it is open."""
    if rest is None:
        return None
    stop = rest if rest.type == "stop" else next(iter(rest.legs), None)
    return stop if stop is not None and stop.state.status.is_open else None


class _ResyncingStream(TradingStream):
    """`TradingStream` with a full pass after each (re)connection: Alpaca does not replay missed updates."""

    on_connect: Callable[[], object] | None = None

    async def _start_ws(self) -> None:
        await super()._start_ws()
        if self.on_connect is not None:
            try:
                await asyncio.to_thread(self.on_connect)
            except Exception:
                log.exception("trade manager: pass after the stream connected failed")
