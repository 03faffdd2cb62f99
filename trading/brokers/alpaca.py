"""Alpaca (paper by default) behind the Broker interface, on alpaca-py's real `TradingClient`.

The one property that matters: an order is never sent twice. Every order carries a deterministic
client order id and Alpaca refuses a second order with the same id, so `submit` can be retried safely:

* it looks the id up first and returns an order that already exists, unsent;
* HTTP 429 (rate limited: nothing was created) -> back off, look up, retry;
* HTTP 5xx, a timeout or a transport error -> the order may or may not exist -> look up, retry
  only if it is not there; when the answer stays unknown, raise `UnknownOutcome` naming the id;
* HTTP 422 "client_order_id must be unique" -> it exists (sent by an earlier attempt) -> look it up;
* any other refusal (403 insufficient buying power, 422 bad order) -> `BrokerError` naming the order,
  status and Alpaca's message (raised, not returned as REJECTED: the caller records the rejection).
Out of attempts: only 429s -> `BrokerError` (nothing was created); otherwise `UnknownOutcome`.

alpaca-py sends requests without a timeout and retries 429/504 on its own (blindly, sleeping 3 s);
both are replaced here: a default timeout on the session, the client's own retries off.

Brackets: an entry is sent as a plain order; its stop and targets are not an Alpaca bracket (which
has one take-profit for the whole quantity). `trading.trade_manager` places the exits once the entry
has filled (`submit_exit`: OCO orders and stops, good till canceled) and moves the stop to breakeven
(`replace_stop`), following `strategies/brackets.py`. Exits and replacements carry deterministic
client ids too and go through the same look-up-first path, so neither is ever sent twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, PositionSide, QueryOrderStatus, TimeInForce
from alpaca.trading.enums import OrderStatus as AlpacaStatus
from alpaca.trading.models import Clock as AlpacaClock
from alpaca.trading.models import ClosePositionResponse, Order, Position, TradeAccount
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest
from alpaca.trading.stream import TradingStream

from lake.http import install_timeout
from trading.brokers.base import (
    Account,
    BrokerError,
    Clock,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    UnknownOutcome,
)
from trading.models import Side

T = TypeVar("T")

_STATUS = {
    AlpacaStatus.NEW: OrderStatus.NEW,
    AlpacaStatus.ACCEPTED: OrderStatus.NEW,
    AlpacaStatus.PENDING_NEW: OrderStatus.NEW,
    AlpacaStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    AlpacaStatus.FILLED: OrderStatus.FILLED,
    AlpacaStatus.CANCELED: OrderStatus.CANCELED,
    AlpacaStatus.REPLACED: OrderStatus.CANCELED,  # no longer live; its replacement is another order
    AlpacaStatus.EXPIRED: OrderStatus.EXPIRED,
    AlpacaStatus.REJECTED: OrderStatus.REJECTED,
}
_OPEN_ORDERS_LIMIT = 500  # Alpaca's maximum page; more open orders than this is not a state we run in


@dataclass(frozen=True)
class OrderView:
    """An order with what the trade manager needs beyond `OrderState`: its type, levels and legs."""

    state: OrderState
    type: str  # market | limit | stop | ...
    limit_price: float | None
    stop_price: float | None
    legs: tuple[OrderView, ...] = ()


class _Transient(Exception):
    """A failure after which the same request may succeed: rate limit, 5xx, timeout, transport."""

    def __init__(self, detail: str, *, maybe_done: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.maybe_done = maybe_done  # False only for 429: Alpaca did nothing


def _status(error: APIError) -> int | None:
    try:
        status = error.status_code
    except Exception:  # alpaca-py digs through the HTTP error; be defensive
        return None
    return status if isinstance(status, int) else None


def _message(error: APIError) -> str:
    """Alpaca's error message (JSON `message`), else the body text, shortened."""
    text = str(error)
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return text[:200]


def _describe(error: Exception) -> str:
    if isinstance(error, APIError):
        return f"HTTP {_status(error)}: {_message(error)}"
    # requests' messages name the URL, never the headers (where the keys are).
    return f"{type(error).__name__}: {error}"


def tick(price: float) -> float:
    """`price` at Alpaca's increment for US equities: a cent at $1 and above, else 0.0001 (nearest)."""
    return round(price, 2 if price >= 1.0 else 4)


def _float(value: str | float | None) -> float:
    return 0.0 if value in (None, "") else float(value)  # type: ignore[arg-type]


def _view(order: Order) -> OrderView:
    kind = order.type.value if order.type is not None else ""
    limit, stop = _float(order.limit_price), _float(order.stop_price)
    legs = tuple(_view(leg) for leg in order.legs or [])
    return OrderView(_state(order), kind, limit or None, stop or None, legs)


def _state(order: Order) -> OrderState:
    filled = _float(order.filled_qty)
    status = _STATUS.get(order.status)
    if status is None:  # held, pending_cancel, done_for_day, stopped, ...: not final, maybe part-filled
        status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
    avg = _float(order.filled_avg_price)
    return OrderState(
        client_order_id=order.client_order_id,
        broker_order_id=str(order.id),
        symbol=order.symbol or "",
        side=Side.SELL if order.side == OrderSide.SELL else Side.BUY,
        quantity=_float(order.qty),
        filled_quantity=filled,
        avg_fill_price=avg if avg > 0 else None,  # Alpaca may say "0" before the first fill
        status=status,
        submitted_at=order.submitted_at,
    )


class AlpacaBroker:
    """The Broker protocol on Alpaca's trading API. Paper unless `paper=False` (live is opt-in)."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        paper: bool = True,
        url_override: str | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.name = "alpaca-paper" if paper else "alpaca-live"
        self._url = url_override or ("paper-api.alpaca.markets" if paper else "api.alpaca.markets")
        self._client = TradingClient(api_key, secret_key, paper=paper, url_override=url_override)
        self._keys = (api_key, secret_key)  # for the trade updates stream; never shown (see __repr__)
        self._paper = paper
        self._client._retry = 0  # its retry re-POSTs blindly on 504; we retry after a lookup instead
        install_timeout(self._client._session, timeout_s)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._sleep = sleep

    def __repr__(self) -> str:  # never the keys
        return f"AlpacaBroker(name={self.name!r}, url={self._url!r})"

    # -- plumbing
    def _backoff(self, attempt: int) -> None:
        self._sleep(self._backoff_s * 2**attempt)

    def _once(self, call: Callable[[], T]) -> T:
        """One request; transient failures become `_Transient`, other API errors pass through."""
        try:
            return call()
        except APIError as error:
            status = _status(error)
            if status == 429:
                raise _Transient(_describe(error), maybe_done=False) from error
            if status is None or status >= 500:
                raise _Transient(_describe(error), maybe_done=True) from error
            raise
        except requests.RequestException as error:  # timeout, refused, reset: the request may have landed
            raise _Transient(_describe(error), maybe_done=True) from error

    def _read(self, what: str, call: Callable[[], T], *, retry_unknown: bool = True) -> T:
        """A call retried on transient failures (only 429 when `retry_unknown` is False)."""
        for attempt in range(self._max_attempts):
            try:
                return self._once(call)
            except _Transient as failure:
                if attempt == self._max_attempts - 1 or (failure.maybe_done and not retry_unknown):
                    kind = UnknownOutcome if failure.maybe_done and not retry_unknown else BrokerError
                    raise kind(
                        f"alpaca {what}: failed after {attempt + 1} attempt(s): {failure.detail}"
                    ) from None
                self._backoff(attempt)
            except APIError as error:
                raise BrokerError(f"alpaca {what}: {_describe(error)}") from None
        raise AssertionError("unreachable")

    def _lookup(self, client_order_id: str, label: str | None = None) -> OrderState | None:
        """The order with this client id, None if Alpaca has none; UnknownOutcome if we cannot tell."""
        label = label or f"order {client_order_id}"
        for attempt in range(self._max_attempts):
            try:
                order = self._once(lambda: self._client.get_order_by_client_id(client_order_id))
                assert isinstance(order, Order)
                return _state(order)
            except _Transient as failure:
                if attempt == self._max_attempts - 1:
                    raise UnknownOutcome(
                        f"{label}: cannot tell whether it exists at alpaca; lookup failed "
                        f"{attempt + 1} time(s): {failure.detail}"
                    ) from None
                self._backoff(attempt)
            except APIError as error:
                if _status(error) == 404:
                    return None
                raise BrokerError(f"{label}: lookup refused by alpaca: {_describe(error)}") from None
        raise AssertionError("unreachable")

    # -- orders
    def _request(self, order: OrderRequest) -> AlpacaOrderRequest:
        fields: dict[str, Any] = {
            "symbol": order.symbol,
            "qty": order.quantity,
            "side": OrderSide.BUY if order.side == Side.BUY else OrderSide.SELL,
            "time_in_force": TimeInForce.DAY,
            "client_order_id": order.client_order_id,
        }
        # The levels (stop, target1, target2) are not sent: the trade manager places the exits.
        if order.type == OrderType.LIMIT:
            if order.limit_price is None:
                raise BrokerError(
                    f"order {order.client_order_id} ({order.symbol}): limit order without limit_price"
                )
            return LimitOrderRequest(limit_price=order.limit_price, **fields)
        return MarketOrderRequest(**fields)

    def submit(self, order: OrderRequest) -> OrderState:
        cid = order.client_order_id
        label = f"order {cid} ({order.side.value} {order.quantity:g} {order.symbol})"
        return self._send(cid, label, lambda: self._request(order), self._client.submit_order)

    def _send(
        self, cid: str, label: str, build: Callable[[], Any], call: Callable[[Any], Any]
    ) -> OrderState:
        """Creates the order `cid` once: look it up first, retry only after a look-up says it is not there."""
        existing = self._lookup(cid, label)  # UnknownOutcome here: nothing sent now, an earlier send unknown
        if existing is not None:
            return existing  # sent before (an earlier run or attempt): never send it again
        request = build()
        maybe_sent = False  # did any attempt possibly reach Alpaca?
        detail = ""
        for attempt in range(self._max_attempts):
            if attempt > 0:
                self._backoff(attempt - 1)
                existing = self._lookup(cid, label)
                if existing is not None:
                    return existing  # an earlier attempt landed after all
            try:
                created = self._once(lambda: call(request))
                assert isinstance(created, Order)
                return _state(created)
            except _Transient as failure:
                maybe_sent = maybe_sent or failure.maybe_done
                detail = failure.detail
            except APIError as error:
                status, message = _status(error), _message(error)
                if status == 422 and "client_order_id" in message and "unique" in message:
                    found = self._lookup(cid, label)  # it exists: an earlier attempt or another process
                    if found is not None:
                        return found
                    raise UnknownOutcome(f"{label}: alpaca says the id is taken but cannot find it") from None
                raise BrokerError(f"{label}: rejected by alpaca: HTTP {status}: {message}") from None
        existing = self._lookup(cid, label)
        if existing is not None:
            return existing
        if maybe_sent:  # a timed-out request may still land: the caller must look it up later
            raise UnknownOutcome(f"{label}: outcome unknown after {self._max_attempts} attempt(s): {detail}")
        raise BrokerError(f"{label}: not sent after {self._max_attempts} attempt(s): {detail}")

    def get_order(self, client_order_id: str) -> OrderState | None:
        return self._lookup(client_order_id)

    # -- exits (the trade manager's legs)
    def submit_exit(
        self, client_order_id: str, symbol: str, side: Side, quantity: float, *, stop: float, target: float | None
    ) -> OrderState:
        """An exit, good till canceled: OCO (take-profit limit at `target`, stop leg at `stop`) or a stop.

        Levels go at Alpaca's price increment (`tick`): it refuses sub-penny prices."""
        stop = tick(stop)
        target = None if target is None else tick(target)
        label = f"exit {client_order_id} ({side.value} {quantity:g} {symbol})"
        fields: dict[str, Any] = {
            "symbol": symbol,
            "qty": quantity,
            "side": OrderSide.BUY if side == Side.BUY else OrderSide.SELL,
            "time_in_force": TimeInForce.GTC,
            "client_order_id": client_order_id,
        }

        def build() -> AlpacaOrderRequest:
            if target is None:
                return StopOrderRequest(stop_price=stop, **fields)
            return LimitOrderRequest(
                order_class=OrderClass.OCO,
                limit_price=target,
                take_profit=TakeProfitRequest(limit_price=target),
                stop_loss=StopLossRequest(stop_price=stop),
                **fields,
            )

        return self._send(client_order_id, label, build, self._client.submit_order)

    def replace_stop(self, broker_order_id: str, client_order_id: str, stop_price: float) -> OrderState:
        """Moves the open stop `broker_order_id` to `stop_price`; the replacement is `client_order_id`.

        Alpaca replaces by creating a new order: it is looked up by its client id first and after any
        unknown outcome, so a 504 after Alpaca accepted never replaces twice. A stop that is no longer
        open (filled, canceled) cannot be replaced: BrokerError.
        """
        stop_price = tick(stop_price)  # e.g. an average fill price of several partial fills
        label = f"stop {broker_order_id} -> {client_order_id} at {stop_price:g}"
        request = ReplaceOrderRequest(stop_price=stop_price, client_order_id=client_order_id)
        return self._send(
            client_order_id, label, lambda: request, lambda r: self._client.replace_order_by_id(broker_order_id, r)
        )

    def cancel(self, broker_order_id: str) -> None:
        """Cancels one open order (an OCO with its leg); one no longer open raises BrokerError."""
        self._read(f"cancel order {broker_order_id}", lambda: self._client.cancel_order_by_id(broker_order_id))

    def order_view(self, client_order_id: str) -> OrderView | None:
        """The order with this client id, with its type, levels and legs; None if Alpaca has none."""
        label = f"order {client_order_id}"
        try:
            order = self._read(label, lambda: self._client.get_order_by_client_id(client_order_id))
        except BrokerError as error:
            if "HTTP 404" in str(error):
                return None
            raise
        assert isinstance(order, Order)
        return _view(order)

    def trading_stream(
        self, url_override: str | None = None, *, stream_class: type[TradingStream] = TradingStream, **kwargs: Any
    ) -> TradingStream:
        """alpaca-py's trade updates websocket for this account (paper or live, like the client)."""
        # alpaca-py annotates url_override as str (default None)
        return stream_class(*self._keys, paper=self._paper, url_override=url_override, **kwargs)  # type: ignore[arg-type]

    def open_orders(self) -> list[OrderState]:
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=_OPEN_ORDERS_LIMIT)
        orders = self._read("open orders", lambda: self._client.get_orders(filter=request))
        assert isinstance(orders, list)
        return [_state(o) for o in orders if isinstance(o, Order)]

    def cancel_all(self) -> int:
        """Cancels every open order (bracket legs included); returns how many Alpaca canceled."""
        answers = self._read("cancel all orders", self._client.cancel_orders)  # idempotent: safe to retry
        assert isinstance(answers, list)
        return sum(1 for a in answers if 200 <= getattr(a, "status", 0) < 300)

    def close_all(self) -> list[OrderState]:
        """Cancels open orders and liquidates every position; returns the closing orders.

        Not retried after an unknown outcome: a second DELETE while the first one's orders are in
        flight would be refused per symbol (quantity held for orders) and muddle the answer.
        A symbol Alpaca refuses to close raises BrokerError: a partial flatten must be seen.
        """
        answers = self._read(
            "close all positions",
            lambda: self._client.close_all_positions(cancel_orders=True),
            retry_unknown=False,
        )
        assert isinstance(answers, list)
        states: list[OrderState] = []
        refused: list[str] = []
        for answer in answers:
            assert isinstance(answer, ClosePositionResponse)
            if isinstance(answer.body, Order):
                states.append(_state(answer.body))
            else:
                refused.append(f"{answer.symbol}: HTTP {answer.status}: {answer.body.message}")
        if refused:
            sent = ", ".join(s.broker_order_id for s in states) or "none"
            raise BrokerError(
                f"alpaca close all: refused for {'; '.join(refused)} (closing orders sent: {sent})"
            )
        return states

    # -- account
    def positions(self) -> dict[str, float]:
        rows = self._read("positions", self._client.get_all_positions)
        assert isinstance(rows, list)
        out: dict[str, float] = {}
        for row in rows:
            assert isinstance(row, Position)
            qty = abs(float(row.qty))  # Alpaca already signs shorts; the side is the authority
            out[row.symbol] = -qty if row.side == PositionSide.SHORT else qty
        return out

    def prices(self) -> dict[str, float]:
        """Each held symbol's current price, as Alpaca marks the position."""
        rows = self._read("positions", self._client.get_all_positions)
        assert isinstance(rows, list)
        return {row.symbol: _float(row.current_price) for row in rows if isinstance(row, Position) and _float(row.current_price) > 0}

    def account(self) -> Account:
        acct = self._read("account", self._client.get_account)
        assert isinstance(acct, TradeAccount)
        missing = [f for f in ("cash", "equity", "buying_power") if getattr(acct, f) in (None, "")]
        if missing:
            raise BrokerError(f"alpaca account: response lacks {', '.join(missing)}")
        return Account(
            cash=_float(acct.cash), equity=_float(acct.equity), buying_power=_float(acct.buying_power)
        )

    def clock(self) -> Clock:
        clock = self._read("clock", self._client.get_clock)
        assert isinstance(clock, AlpacaClock)
        return Clock(
            timestamp=clock.timestamp,
            is_open=clock.is_open,
            next_open=clock.next_open,
            next_close=clock.next_close,
        )
