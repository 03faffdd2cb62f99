"""A loopback server speaking Alpaca's trading API (`/v2/...`), for the real alpaca-py `TradingClient`.

    with AlpacaTradingServer(prices={"AAPL": 190.0}) as srv:
        srv.fail("POST", "/v2/orders", Fault.accept_then_fail())
        TradingClient("key", "secret", url_override=srv.base_url)

Like Alpaca it answers with every field alpaca-py's models require, money and quantities as strings
and timestamps with a Z. Orders: market orders fill at once at `prices[symbol]` (100.0 when unknown)
unless `fill_market_orders` is False; limit orders and bracket legs rest. A client order id is unique
(422 on reuse, as on Alpaca), which is what makes a resubmit after an unknown outcome safe.

Faults are scripted by request number (`fail_request`) or by method and path with a count (`fail`).
A fault can refuse (any status), hang (sleep, then answer), drop the connection, or *accept then
fail*: do the work (the order exists afterwards) and still answer with an error or hang - the case
that duplicates orders in clients which retry blindly. `orders_created_by_client_id` counts every
order created per client id, so tests can assert that nothing was sent twice.

Exits rest and fill when the market moves (`set_price`): sell limits at or above their price, sell
stops at or below theirs (buys mirrored), at the new price (a gap fills beyond the level). OCO
orders (a take-profit limit with a stop leg) and bracket legs cancel their sibling when one fills.
`fill_order` fills an order (partly) by hand. An order against a position may not exceed the
quantity open orders have not reserved (403 "insufficient qty available", as on Alpaca). PATCH /v2/orders/{id} replaces an open order (the old
one becomes "replaced"). Every change is pushed on the trade_updates websocket (`stream_url`), in the
protocol alpaca-py's `TradingStream` speaks: authenticate, listen, then `{"stream": "trade_updates",
"data": {...}}` frames (binary JSON like Alpaca; msgpack when the client asks with Content-Type
application/msgpack). `stream_down()` drops every stream connection and refuses new ones until
`stream_up()`; updates while down are lost, as on Alpaca (no replay).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgpack
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve

OPEN_STATUSES = {
    "new",
    "accepted",
    "pending_new",
    "partially_filled",
    "held",
    "accepted_for_bidding",
    "pending_cancel",
}

_ERROR_CODES = {400: 40010000, 401: 40110000, 403: 40310000, 404: 40410000, 422: 40010000, 429: 42910000}
_DEFAULT_MESSAGES = {
    403: "forbidden",
    429: "rate limit exceeded",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour. `status=None` answers normally (after any hang)."""

    status: int | None = 500
    message: str | None = None  # Alpaca's error message; a default per status when None
    hang_s: float = 0.0  # sleep this long before answering (cut short when the server closes)
    accept: bool = False  # do the request's work first (e.g. create the order), then misbehave
    drop: bool = False  # close the connection without answering (a transport error for the client)

    @classmethod
    def error(cls, status: int, message: str | None = None) -> Fault:
        return cls(status=status, message=message)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Sleep, then answer normally: a client with a shorter timeout never sees the answer."""
        return cls(status=None, hang_s=seconds)

    @classmethod
    def dropped(cls) -> Fault:
        return cls(status=None, drop=True)

    @classmethod
    def accept_then_fail(cls, status: int = 504) -> Fault:
        return cls(status=status, accept=True)

    @classmethod
    def accept_then_hang(cls, seconds: float = 5.0) -> Fault:
        return cls(status=None, hang_s=seconds, accept=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join handler threads: a hanging handler may still be sleeping

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close their socket; nothing to report


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dec(value: float) -> str:
    """A number as Alpaca writes it: a decimal string without float noise ("10", "187.25")."""
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset:{symbol}"))


class _Reject(Exception):
    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class AlpacaTradingServer:
    """Fake Alpaca trading endpoint; `base_url` is what `TradingClient(url_override=...)` takes."""

    def __init__(
        self,
        *,
        prices: dict[str, float] | None = None,
        default_price: float = 100.0,
        cash: float = 100_000.0,
        fill_market_orders: bool = True,
        market_open: bool = True,
        api_key: str | None = None,  # when set, the key and secret headers must match exactly
        secret_key: str | None = None,
    ) -> None:
        self.prices: dict[str, float] = dict(prices or {})
        self.default_price = default_price
        self.cash = cash
        self.fill_market_orders = fill_market_orders
        self.market_open = market_open
        self.api_key, self.secret_key = api_key, secret_key
        # symbol -> message: DELETE /v2/positions refuses to close it (Alpaca answers 403 for that symbol)
        self.close_refusals: dict[str, str] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # Alpaca id -> order object, in creation order
        self.positions: dict[str, tuple[float, float]] = {}  # symbol -> (signed qty, avg entry price)
        self.orders_created_by_client_id: dict[str, int] = {}
        # every request: {"n", "method", "path", "query" (first value each), "body" (parsed JSON or None)}
        self.requests: list[dict[str, Any]] = []
        self._by_number: dict[int, Fault] = {}
        self._by_route: dict[tuple[str, str], list[Fault]] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._server: _Server | None = None
        # the trade_updates stream
        self.trade_updates: list[dict[str, Any]] = []  # every update generated (delivered or lost)
        self.stream_connections = 0  # authenticated connections so far
        self._listeners: list[asyncio.Queue[dict[str, Any] | None]] = []
        self._stream_is_down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws: WsServer | None = None

    # -- lifecycle
    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> AlpacaTradingServer:
        self._closing.clear()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._start_stream()
        return self

    @property
    def stream_url(self) -> str:
        assert self._ws is not None, "server not started"
        port = next(iter(self._ws.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/stream"

    def _start_stream(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def _open() -> None:
            self._ws = await serve(self._stream_handler, "127.0.0.1", 0)
            ready.set()

        def _run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(_open())
            loop.run_forever()

        threading.Thread(target=_run, daemon=True).start()
        ready.wait(10)
        self._loop = loop

    def _stop_stream(self) -> None:
        loop, ws = self._loop, self._ws
        if loop is None or ws is None:
            return

        async def _close() -> None:
            ws.close()
            await ws.wait_closed()

        asyncio.run_coroutine_threadsafe(_close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._loop = self._ws = None

    def stream_down(self) -> None:
        """Drops every stream connection now and refuses new ones; updates meanwhile are lost."""
        with self._lock:
            self._stream_is_down = True
            for queue in self._listeners:
                self._push(queue, None)  # None: abort that connection
            self._listeners.clear()

    def stream_up(self) -> None:
        with self._lock:
            self._stream_is_down = False

    def _push(self, queue: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any] | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(queue.put_nowait, item)  # FIFO: updates keep their order

    async def _stream_handler(self, ws: ServerConnection) -> None:
        packed = (ws.request.headers.get("Content-Type") if ws.request else None) == "application/msgpack"

        def encode(message: dict[str, Any]) -> bytes:
            return msgpack.packb(message) if packed else json.dumps(message).encode()  # type: ignore[no-any-return]

        def decode(raw: str | bytes) -> Any:
            return msgpack.unpackb(raw) if packed and isinstance(raw, bytes) else json.loads(raw)

        if self._stream_is_down:
            await ws.close(1013, "try again later")
            return
        try:
            auth = decode(await ws.recv())
        except Exception:
            return
        data = (auth.get("data") or {}) if isinstance(auth, dict) else {}
        ok = (
            isinstance(auth, dict)
            and auth.get("action") in ("authenticate", "auth")
            and bool(data.get("key_id"))
            and bool(data.get("secret_key"))
            and (self.api_key is None or (data.get("key_id"), data.get("secret_key")) == (self.api_key, self.secret_key))
        )
        status = "authorized" if ok else "unauthorized"
        await ws.send(encode({"stream": "authorization", "data": {"action": "authenticate", "status": status}}))
        if not ok:
            await ws.close(1008, "unauthorized")
            return
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        with self._lock:
            self.stream_connections += 1

        async def sender() -> None:
            while (item := await queue.get()) is not None:
                await ws.send(encode(item))
            ws.transport.abort()  # a dropped network, not a clean close

        task = asyncio.create_task(sender())
        try:
            async for raw in ws:
                message = decode(raw)
                if isinstance(message, dict) and message.get("action") == "listen":
                    streams = [s for s in (message.get("data") or {}).get("streams", []) if s == "trade_updates"]
                    with self._lock:
                        if streams and queue not in self._listeners and not self._stream_is_down:
                            self._listeners.append(queue)
                    await ws.send(encode({"stream": "listening", "data": {"streams": streams}}))
        except Exception:
            pass
        finally:
            with self._lock:
                if queue in self._listeners:
                    self._listeners.remove(queue)
            task.cancel()

    def _update(self, event: str, order: dict[str, Any], **fields: Any) -> None:
        """One trade update to every listening stream connection (under the lock: in order)."""
        update = {"event": event, "order": self._public(order), "timestamp": _now(), **fields}
        self.trade_updates.append(update)
        for queue in self._listeners:
            self._push(queue, {"stream": "trade_updates", "data": update})

    def stop(self) -> None:
        self._stop_stream()
        self._closing.set()  # wakes hanging handlers, which then drop their connection
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> AlpacaTradingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting
    def fail_request(self, number: int, fault: Fault) -> None:
        """Misbehave on the `number`-th request (1-based, counting every request)."""
        with self._lock:
            self._by_number[number] = fault

    def fail(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """Misbehave on the next `times` requests to `method path` (queued after earlier faults there)."""
        with self._lock:
            self._by_route.setdefault((method.upper(), path), []).extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._by_number.clear()
            self._by_route.clear()

    def add_order(self, body: dict[str, Any]) -> dict[str, Any]:
        """Creates an order out of band (another process, the web UI), as POST /v2/orders would."""
        with self._lock:
            return self._create_order(body)

    def set_price(self, symbol: str, price: float) -> None:
        """The market moves: resting limits and stops of `symbol` that it reaches fill at `price`."""
        with self._lock:
            self.prices[symbol] = price
            for order in list(self.orders.values()):
                if order["symbol"] == symbol and self._live(order) and self._reached(order, price):
                    self._fill(order, price)

    def fill_order(self, client_order_id: str, qty: float | None = None, price: float | None = None) -> None:
        """Fills `qty` (default: the rest) of an open order at `price` (default: the symbol's price)."""
        with self._lock:
            order = self.order_by_client_id(client_order_id)
            assert order is not None and self._live(order), f"no open order {client_order_id}"
            self._fill(order, self._price(order["symbol"]) if price is None else price, qty)

    def _live(self, order: dict[str, Any]) -> bool:
        if order["status"] in ("new", "accepted", "partially_filled"):
            return True
        parent = self.orders.get(order["_parent"]) if order["_parent"] else None
        return order["status"] == "held" and parent is not None and parent["status"] == "filled"

    @staticmethod
    def _reached(order: dict[str, Any], price: float) -> bool:
        sell = order["side"] == "sell"
        if order["type"] == "limit":
            limit = float(order["limit_price"])
            return price >= limit if sell else price <= limit
        if order["type"] == "stop":
            stop = float(order["stop_price"])
            return price <= stop if sell else price >= stop
        return False

    def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((o for o in self.orders.values() if o["client_order_id"] == client_order_id), None)

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def _fault_for(self, number: int, method: str, path: str) -> Fault | None:
        with self._lock:
            if number in self._by_number:
                return self._by_number.pop(number)
            queue = self._by_route.get((method, path))
            return queue.pop(0) if queue else None

    # -- the API
    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            if method == "GET" and path == "/v2/account":
                return 200, self._account()
            if method == "GET" and path == "/v2/clock":
                return 200, self._clock()
            if method == "POST" and path == "/v2/orders":
                return 200, self._create_order(body if isinstance(body, dict) else {})
            if method == "GET" and path == "/v2/orders":
                return 200, self._list_orders(query)
            if method == "PATCH" and path.startswith("/v2/orders/"):
                return 200, self._replace(path.removeprefix("/v2/orders/"), body if isinstance(body, dict) else {})
            if method == "DELETE" and path.startswith("/v2/orders/"):
                order = self.orders.get(path.removeprefix("/v2/orders/"))
                if order is None:
                    raise _Reject(404, f"order not found for {path.removeprefix('/v2/orders/')}")
                if order["status"] not in OPEN_STATUSES:
                    raise _Reject(422, f"order is not cancelable (status {order['status']})", code=42210000)
                for leg in [order, *(order.get("legs") or [])]:  # an OCO or bracket goes as a whole
                    if leg["status"] in OPEN_STATUSES:
                        self._cancel(leg)
                return 204, None
            if method == "DELETE" and path == "/v2/orders":
                return 207, self._cancel_all()
            if method == "GET" and path == "/v2/orders:by_client_order_id":
                order = self.order_by_client_id(query.get("client_order_id", ""))
                if order is None:
                    raise _Reject(404, f"order not found for {query.get('client_order_id')}")
                return 200, self._public(order)
            if method == "GET" and path.startswith("/v2/orders/"):
                order_id = path.removeprefix("/v2/orders/")
                if order_id not in self.orders:
                    raise _Reject(404, f"order not found for {order_id}")
                return 200, self._public(self.orders[order_id])
            if method == "GET" and path == "/v2/positions":
                return 200, [self._position(symbol) for symbol in sorted(self.positions)]
            if method == "DELETE" and path == "/v2/positions":
                return 207, self._close_all(cancel_orders=query.get("cancel_orders", "").lower() == "true")
            raise _Reject(404, f"endpoint not found: {method} {path}")

    def _price(self, symbol: str) -> float:
        return self.prices.get(symbol, self.default_price)

    def _equity(self) -> float:
        return self.cash + sum(qty * self._price(symbol) for symbol, (qty, _) in self.positions.items())

    def _account(self) -> dict[str, Any]:
        long_value = sum(q * self._price(s) for s, (q, _) in self.positions.items() if q > 0)
        short_value = sum(q * self._price(s) for s, (q, _) in self.positions.items() if q < 0)
        equity = self._equity()
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-account")),
            "account_number": "PA3FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": _dec(max(self.cash, 0.0)),
            "regt_buying_power": _dec(max(self.cash, 0.0)),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": _dec(max(self.cash, 0.0)),
            "cash": _dec(self.cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": _dec(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T14:30:00.000000Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": True,
            "equity": _dec(equity),
            "last_equity": _dec(equity),
            "long_market_value": _dec(long_value),
            "short_market_value": _dec(short_value),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    def _clock(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "timestamp": _iso(now),
            "is_open": self.market_open,
            "next_open": _iso(now + timedelta(hours=18 if self.market_open else 1)),
            "next_close": _iso(now + timedelta(hours=1 if self.market_open else 8)),
        }

    def _new_order(
        self, body: dict[str, Any], *, client_order_id: str, status: str, parent: str | None
    ) -> dict[str, Any]:
        now = _now()
        kind = body["type"]
        return {
            "id": str(uuid.uuid4()),
            "client_order_id": client_order_id,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "expired_at": None,
            "expires_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": _asset_id(body["symbol"]),
            "symbol": body["symbol"],
            "asset_class": "us_equity",
            "notional": None,
            "qty": _dec(float(body["qty"])),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": body.get("order_class") or "simple",
            "order_type": kind,
            "type": kind,
            "side": body["side"],
            "time_in_force": body.get("time_in_force", "day"),
            "limit_price": _dec(float(body["limit_price"])) if body.get("limit_price") is not None else None,
            "stop_price": _dec(float(body["stop_price"])) if body.get("stop_price") is not None else None,
            "status": status,
            "extended_hours": bool(body.get("extended_hours", False)),
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "_parent": parent,  # stripped before answering
        }

    def _validate(self, body: dict[str, Any]) -> None:
        for name in ("symbol", "qty", "side", "type", "time_in_force"):
            if body.get(name) in (None, ""):
                raise _Reject(422, f"{name} is required")
        if body["side"] not in ("buy", "sell"):
            raise _Reject(422, f"invalid side: {body['side']}")
        if body["type"] not in ("market", "limit", "stop"):
            raise _Reject(422, f"unsupported order type: {body['type']}")
        if body["type"] == "stop" and body.get("stop_price") is None:
            raise _Reject(422, "stop_price is required for stop orders")
        for where, price in (
            ("limit_price", body.get("limit_price")),
            ("stop_price", body.get("stop_price")),
            ("take_profit.limit_price", (body.get("take_profit") or {}).get("limit_price")),
            ("stop_loss.stop_price", (body.get("stop_loss") or {}).get("stop_price")),
        ):
            self._check_increment(where, price)
        if body.get("order_class") == "oco":
            if body["type"] != "limit":
                raise _Reject(422, "oco orders must be limit orders")
            if not (body.get("take_profit") or {}).get("limit_price"):
                raise _Reject(422, "oco orders require take_profit.limit_price")
            if not (body.get("stop_loss") or {}).get("stop_price"):
                raise _Reject(422, "oco orders require stop_loss.stop_price")
            body.setdefault("limit_price", body["take_profit"]["limit_price"])
        if float(body["qty"]) <= 0:
            raise _Reject(422, "qty must be > 0")
        if body["type"] == "limit" and body.get("limit_price") is None:
            raise _Reject(422, "limit_price is required for limit orders")
        if body.get("order_class") == "bracket":
            if not (body.get("take_profit") or {}).get("limit_price"):
                raise _Reject(422, "bracket orders require take_profit.limit_price")
            if not (body.get("stop_loss") or {}).get("stop_price"):
                raise _Reject(422, "bracket orders require stop_loss.stop_price")

    def _held(self, symbol: str, side: str) -> float:
        """Quantity reserved by open `side` orders of `symbol`: an OCO or a bracket's exits once per group."""
        held = 0.0
        for order in self.orders.values():
            if order["symbol"] != symbol or order["_parent"] is not None:
                continue
            legs = [leg for leg in order.get("legs") or [] if leg["side"] == side and self._live(leg)]
            if order["side"] == side and order["status"] in OPEN_STATUSES:
                held += float(order["qty"]) - float(order["filled_qty"])
            elif legs:  # a filled bracket entry: its take-profit and stop share one quantity
                held += max(float(leg["qty"]) for leg in legs)
        return held

    def _check_available(self, body: dict[str, Any]) -> None:
        """Like Alpaca: an order against a position may not exceed what open orders have not reserved."""
        qty, _ = self.positions.get(body["symbol"], (0.0, 0.0))
        against = qty > 0 if body["side"] == "sell" else qty < 0
        if not against:
            return
        available = abs(qty) - self._held(body["symbol"], body["side"])
        if float(body["qty"]) > available + 1e-9:
            raise _Reject(
                403, f"insufficient qty available for order (requested: {_dec(float(body['qty']))}, available: {_dec(available)})"
            )

    @staticmethod
    def _check_increment(where: str, price: Any) -> None:
        """Alpaca refuses sub-penny prices (at $1 and above; 4 decimals below)."""
        if price is None:
            return
        value = float(price)
        places = 2 if value >= 1.0 else 4
        if abs(value * 10**places - round(value * 10**places)) > 1e-6:
            raise _Reject(422, f"invalid {where} {price}. sub-penny increment does not fulfill minimum pricing criteria")

    def _create_order(self, body: dict[str, Any]) -> dict[str, Any]:
        self._validate(body)
        client_id = str(body.get("client_order_id") or uuid.uuid4())
        if self.order_by_client_id(client_id) is not None:
            raise _Reject(422, "client_order_id must be unique", code=40010001)
        self._check_available(body)
        price = {"limit": body.get("limit_price"), "stop": body.get("stop_price")}.get(body["type"])
        price = float(price) if price is not None else self._price(body["symbol"])
        if body["side"] == "buy" and float(body["qty"]) * price > max(self.cash, 0.0):
            raise _Reject(403, "insufficient buying power")
        order = self._new_order(body, client_order_id=client_id, status="new", parent=None)
        self.orders[order["id"]] = order
        self.orders_created_by_client_id[client_id] = self.orders_created_by_client_id.get(client_id, 0) + 1
        if body.get("order_class") == "bracket":
            exit_side = "sell" if body["side"] == "buy" else "buy"
            take_profit = {
                "symbol": body["symbol"],
                "qty": body["qty"],
                "side": exit_side,
                "type": "limit",
                "time_in_force": order["time_in_force"],
                "limit_price": body["take_profit"]["limit_price"],
            }
            stop_loss = {
                "symbol": body["symbol"],
                "qty": body["qty"],
                "side": exit_side,
                "type": "stop",
                "time_in_force": order["time_in_force"],
                "stop_price": body["stop_loss"]["stop_price"],
            }
            legs = []
            for leg_body in (take_profit, stop_loss):
                leg = self._new_order(
                    leg_body, client_order_id=str(uuid.uuid4()), status="held", parent=order["id"]
                )
                leg["order_class"] = "bracket"
                self.orders[leg["id"]] = leg
                legs.append(leg)
            order["legs"] = legs
        if body.get("order_class") == "oco":  # the take-profit is this order; the stop is its live leg
            stop_body = {
                "symbol": body["symbol"],
                "qty": body["qty"],
                "side": body["side"],
                "type": "stop",
                "time_in_force": order["time_in_force"],
                "stop_price": body["stop_loss"]["stop_price"],
            }
            leg = self._new_order(stop_body, client_order_id=str(uuid.uuid4()), status="new", parent=order["id"])
            leg["order_class"] = "oco"
            self.orders[leg["id"]] = leg
            order["legs"] = [leg]
        self._update("new", order)
        if body["type"] == "market" and self.fill_market_orders:
            self._fill(order, self._price(body["symbol"]))
        return self._public(order)

    def _fill(self, order: dict[str, Any], price: float, part: float | None = None) -> None:
        done = float(order["filled_qty"])
        qty = float(order["qty"]) - done if part is None else min(part, float(order["qty"]) - done)
        assert qty > 0, f"nothing left to fill in {order['client_order_id']}"
        signed = qty if order["side"] == "buy" else -qty
        old_qty, old_avg = self.positions.get(order["symbol"], (0.0, 0.0))
        new_qty = old_qty + signed
        if abs(new_qty) < 1e-12:
            self.positions.pop(order["symbol"], None)
        else:
            if old_qty == 0 or (old_qty > 0) == (signed > 0):  # opening or adding: weighted average
                avg = (abs(old_qty) * old_avg + qty * price) / abs(new_qty)
            elif (old_qty > 0) == (new_qty > 0):  # reducing: entry price unchanged
                avg = old_avg
            else:  # flipped through zero: the remainder was opened at this price
                avg = price
            self.positions[order["symbol"]] = (new_qty, avg)
        self.cash -= signed * price
        now = _now()
        old_avg_fill = float(order["filled_avg_price"] or 0.0)
        cum = done + qty
        full = abs(cum - float(order["qty"])) < 1e-12
        order.update(
            status="filled" if full else "partially_filled",
            filled_qty=_dec(cum),
            filled_avg_price=_dec((old_avg_fill * done + price * qty) / cum),
            filled_at=now if full else None,
            updated_at=now,
        )
        position = self.positions.get(order["symbol"], (0.0, 0.0))[0]
        self._update(
            "fill" if full else "partial_fill",
            order,
            execution_id=str(uuid.uuid4()),
            price=_dec(price),
            qty=_dec(qty),
            position_qty=_dec(position),
        )
        if not full:
            return
        if order["order_class"] == "bracket" and order["_parent"] is None:
            for leg in order.get("legs") or []:
                if leg["type"] == "limit":
                    leg.update(status="new", updated_at=now)  # the take-profit goes live; the stop stays held
            return
        # one-cancels-other: an OCO's or a bracket's exit leg filled -> its siblings are canceled
        parent = self.orders.get(order["_parent"]) if order["_parent"] else None
        group = [parent, *(parent.get("legs") or [])] if parent is not None else list(order.get("legs") or [])
        if order["order_class"] == "bracket" and parent is not None:
            group = list(parent.get("legs") or [])  # the filled entry is not canceled
        for other in group:
            if other is not None and other is not order and other["status"] in (*OPEN_STATUSES, "held"):
                self._cancel(other)

    def _public(self, order: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in order.items() if not k.startswith("_")}
        if out.get("legs"):
            out["legs"] = [self._public(leg) for leg in out["legs"]]
        return out

    def _list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        status = query.get("status", "open")
        nested = query.get("nested", "").lower() == "true"
        symbols = set(query["symbols"].split(",")) if query.get("symbols") else None
        out = []
        for order in self.orders.values():
            if nested and order["_parent"] is not None:
                continue
            is_open = order["status"] in OPEN_STATUSES
            if (status == "open" and not is_open) or (status == "closed" and is_open):
                continue
            if symbols is not None and order["symbol"] not in symbols:
                continue
            public = self._public(order)
            if not nested:
                public["legs"] = None
            out.append(public)
        if query.get("direction", "desc") == "desc":
            out.reverse()
        return out[: int(query.get("limit") or 50)]

    def _cancel(self, order: dict[str, Any]) -> None:
        now = _now()
        order.update(status="canceled", canceled_at=now, updated_at=now)
        self._update("canceled", order)

    def _replace(self, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH: a new order with the changed fields takes the old one's place (and its OCO/bracket slot)."""
        old = self.orders.get(order_id)
        if old is None:
            raise _Reject(404, f"order not found for {order_id}")
        if old["status"] not in ("new", "accepted", "held"):
            raise _Reject(422, f"order is not replaceable (status {old['status']})", code=42210000)
        client_id = str(body.get("client_order_id") or uuid.uuid4())
        if self.order_by_client_id(client_id) is not None:
            raise _Reject(422, "client_order_id must be unique", code=40010001)
        now = _now()
        new = {**old, "id": str(uuid.uuid4()), "client_order_id": client_id, "replaces": old["id"]}
        new.update(created_at=now, updated_at=now, submitted_at=now, replaced_by=None, replaced_at=None)
        for name in ("limit_price", "stop_price"):
            self._check_increment(name, body.get(name))
            if body.get(name) is not None:
                new[name] = _dec(float(body[name]))
        if body.get("qty") is not None:
            new["qty"] = _dec(float(body["qty"]))
        if body.get("time_in_force"):
            new["time_in_force"] = body["time_in_force"]
        old.update(status="replaced", replaced_by=new["id"], replaced_at=now, updated_at=now)
        self.orders[new["id"]] = new
        self.orders_created_by_client_id[client_id] = self.orders_created_by_client_id.get(client_id, 0) + 1
        parent = self.orders.get(old["_parent"]) if old["_parent"] else None
        if parent is not None:
            parent["legs"] = [new if leg is old else leg for leg in parent["legs"]]
        for leg in new.get("legs") or []:
            leg["_parent"] = new["id"]
        self._update("replaced", old)
        self._update("new", new)
        return self._public(new)

    def _cancel_all(self) -> list[dict[str, Any]]:
        answers = []
        for order in self.orders.values():
            if order["status"] in OPEN_STATUSES:
                self._cancel(order)
                answers.append({"id": order["id"], "status": 200, "body": None})
        return answers

    def _close_all(self, *, cancel_orders: bool) -> list[dict[str, Any]]:
        if cancel_orders:
            self._cancel_all()
        answers = []
        for symbol, (qty, _) in sorted(self.positions.items()):
            if symbol in self.close_refusals:
                refusal = {"code": 40310000, "message": self.close_refusals[symbol], "symbol": symbol}
                answers.append({"symbol": symbol, "status": 403, "body": refusal})
                continue
            body = {
                "symbol": symbol,
                "qty": abs(qty),
                "side": "sell" if qty > 0 else "buy",
                "type": "market",
                "time_in_force": "day",
            }
            order = self._new_order(body, client_order_id=str(uuid.uuid4()), status="new", parent=None)
            self.orders[order["id"]] = order
            if self.fill_market_orders:
                self._fill(order, self._price(symbol))
            answers.append({"symbol": symbol, "status": 200, "body": self._public(order)})
        return answers

    def _position(self, symbol: str) -> dict[str, Any]:
        qty, avg = self.positions[symbol]
        price = self._price(symbol)
        cost = qty * avg
        value = qty * price
        pl = value - cost
        plpc = pl / abs(cost) if cost else 0.0
        return {
            "asset_id": _asset_id(symbol),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": _dec(avg),
            "qty": _dec(qty),  # negative for a short, like Alpaca
            "side": "long" if qty > 0 else "short",
            "market_value": _dec(value),
            "cost_basis": _dec(cost),
            "unrealized_pl": _dec(pl),
            "unrealized_plpc": _dec(plpc),
            "unrealized_intraday_pl": _dec(pl),
            "unrealized_intraday_plpc": _dec(plpc),
            "current_price": _dec(price),
            "lastday_price": _dec(price),
            "change_today": "0",
            "qty_available": _dec(qty),
        }

    # -- HTTP
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

            def do_PATCH(self) -> None:  # noqa: N802
                self._handle("PATCH")

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with server._lock:
                    number = len(server.requests) + 1
                    server.requests.append(
                        {"n": number, "method": method, "path": url.path, "query": query, "body": body}
                    )
                key, secret = self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")
                if (
                    not key
                    or not secret
                    or (server.api_key is not None and (key, secret) != (server.api_key, server.secret_key))
                ):
                    return self._error(401, "request is not authorized")
                fault = server._fault_for(number, method, url.path)
                if fault is None:
                    return self._answer(method, url.path, query, body)
                if fault.drop:
                    self.close_connection = True
                    return None
                answer = self._work(method, url.path, query, body) if fault.accept else None
                if fault.hang_s and server._closing.wait(fault.hang_s):
                    self.close_connection = True  # the server is closing: give up quietly
                    return None
                if fault.status is not None:
                    return self._error(
                        fault.status, fault.message or _DEFAULT_MESSAGES.get(fault.status, "error")
                    )
                if answer is None:
                    answer = self._work(method, url.path, query, body)
                return self._send(*answer)

            def _work(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
                try:
                    status, payload = server._route(method, path, query, body)
                except _Reject as reject:
                    code = reject.code or _ERROR_CODES.get(reject.status, reject.status * 100_000)
                    return reject.status, {"code": code, "message": reject.message}
                return status, payload

            def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
                self._send(*self._work(method, path, query, body))

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"code": _ERROR_CODES.get(status, status * 100_000), "message": message})

            def _send(self, status: int, payload: Any) -> None:
                data = b"" if status == 204 else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timed out) before the answer

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
