"""AlpacaBroker on the real alpaca-py TradingClient against the loopback Alpaca trading server.

The point of most tests: whatever the network or Alpaca does (rate limits, 5xx, timeouts, an order
created but answered with an error), an order is created at most once and `submit` returns it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.fakes.alpaca_trading_server import AlpacaTradingServer, Fault
from trading.brokers.alpaca import AlpacaBroker
from trading.brokers.base import (
    Broker,
    BrokerError,
    OrderRequest,
    OrderStatus,
    OrderType,
    UnknownOutcome,
    client_order_id,
)
from trading.models import Side

# Longer than pytest's timeout: a hang this long is answered only by the client giving up.
FOREVER_S = 3600.0

KEY, SECRET = "PKTESTKEY0123456789", "test-secret-abcdefghijklmnop"
LOOKUP = "/v2/orders:by_client_order_id"
PRICES = {"AAPL": 190.0, "MSFT": 410.0, "NVDA": 120.0}


class Sleeps(list[float]):
    """The broker's `sleep`: records the backoff instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[AlpacaTradingServer]:
    with AlpacaTradingServer(prices=PRICES, api_key=KEY, secret_key=SECRET) as srv:
        yield srv


def make_broker(
    srv: AlpacaTradingServer, sleeps: Sleeps | None = None, *, timeout_s: float = 5.0, backoff_s: float = 0.5
) -> AlpacaBroker:
    sleep = sleeps if sleeps is not None else Sleeps()
    return AlpacaBroker(
        KEY, SECRET, url_override=srv.base_url, timeout_s=timeout_s, backoff_s=backoff_s, sleep=sleep
    )


def order(
    symbol: str = "AAPL", side: Side = Side.BUY, qty: float = 10, leg: str = "entry", **kwargs: object
) -> OrderRequest:
    cid = client_order_id("sma_cross", symbol, datetime(2024, 3, 1, tzinfo=UTC), side, leg)
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=qty, **kwargs)  # type: ignore[arg-type]


def test_is_a_broker(server: AlpacaTradingServer) -> None:
    broker: Broker = make_broker(server)
    assert broker.name == "alpaca-paper"
    live = AlpacaBroker(KEY, SECRET, paper=False, url_override=server.base_url)
    assert live.name == "alpaca-live"
    for b in (broker, live):
        assert KEY not in repr(b) and SECRET not in repr(b)


def test_market_order_fills(server: AlpacaTradingServer) -> None:
    req = order()
    state = make_broker(server).submit(req)
    assert state.status == OrderStatus.FILLED
    assert (state.client_order_id, state.symbol, state.side) == (req.client_order_id, "AAPL", Side.BUY)
    assert state.quantity == 10 and state.filled_quantity == 10 and state.avg_fill_price == 190.0
    assert state.submitted_at is not None and state.submitted_at.tzinfo is not None
    stored = server.order_by_client_id(req.client_order_id)
    assert stored is not None and state.broker_order_id == stored["id"]
    [post] = server.calls("POST", "/v2/orders")
    assert post["body"] == {
        "symbol": "AAPL",
        "qty": 10.0,
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        "client_order_id": req.client_order_id,
    }


def test_bracket_entry_is_a_plain_order(server: AlpacaTradingServer) -> None:
    """The levels are not an Alpaca bracket (one target for everything): the trade manager places the exits."""
    req = order(stop=180.0, target1=200.0, target2=210.0)
    state = make_broker(server).submit(req)
    assert state.status == OrderStatus.FILLED
    [post] = server.calls("POST", "/v2/orders")
    body = post["body"]
    assert "order_class" not in body or body["order_class"] in (None, "simple")
    assert not {"take_profit", "stop_loss"} & set(body)
    stored = server.order_by_client_id(req.client_order_id)
    assert stored is not None and not stored["legs"]


def test_limit_order_rests(server: AlpacaTradingServer) -> None:
    req = order(type=OrderType.LIMIT, limit_price=185.5)
    state = make_broker(server).submit(req)
    assert state.status == OrderStatus.NEW
    assert state.filled_quantity == 0 and state.avg_fill_price is None
    [post] = server.calls("POST", "/v2/orders")
    assert post["body"]["type"] == "limit" and post["body"]["limit_price"] == 185.5


def test_resubmit_same_id_is_not_sent_again(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    first = broker.submit(order())
    again = make_broker(server).submit(order())  # e.g. a restarted run replaying the same decision
    assert again == first
    assert len(server.calls("POST", "/v2/orders")) == 1
    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("GET", LOOKUP),
        ("POST", "/v2/orders"),
        ("GET", LOOKUP),
    ]


def test_rate_limited_then_success(server: AlpacaTradingServer) -> None:
    server.fail("POST", "/v2/orders", Fault.error(429), times=2)
    sleeps = Sleeps()
    req = order()
    state = make_broker(server, sleeps, backoff_s=0.5).submit(req)
    assert state.status == OrderStatus.FILLED
    assert server.orders_created_by_client_id == {req.client_order_id: 1}
    assert sleeps == [0.5, 1.0]  # exponential backoff
    # a lookup before every retry
    assert [r["method"] for r in server.requests] == ["GET", "POST", "GET", "POST", "GET", "POST"]


def test_accept_then_504_is_not_duplicated(server: AlpacaTradingServer) -> None:
    server.fail("POST", "/v2/orders", Fault.accept_then_fail(504))
    req = order()
    state = make_broker(server).submit(req)
    assert state.status == OrderStatus.FILLED
    assert server.orders_created_by_client_id == {req.client_order_id: 1}
    assert len(server.calls("POST", "/v2/orders")) == 1  # found by the lookup: not sent again


def test_plain_504_is_retried_once_created(server: AlpacaTradingServer) -> None:
    server.fail("POST", "/v2/orders", Fault.error(504))
    req = order()
    state = make_broker(server).submit(req)
    assert state.status == OrderStatus.FILLED
    assert server.orders_created_by_client_id == {req.client_order_id: 1}
    assert len(server.calls("POST", "/v2/orders")) == 2


def test_hang_past_timeout_after_accept(server: AlpacaTradingServer) -> None:
    # The server never answers on its own (the hang ends only when the server closes): a client
    # without a working timeout blocks here until pytest-timeout fails the test. No clock is read.
    server.fail("POST", "/v2/orders", Fault.accept_then_hang(FOREVER_S))
    req = order()
    state = make_broker(server, timeout_s=0.3).submit(req)
    assert state.status == OrderStatus.FILLED
    assert server.orders_created_by_client_id == {req.client_order_id: 1}
    assert len(server.calls("POST", "/v2/orders")) == 1


def test_duplicate_id_422_returns_existing(server: AlpacaTradingServer) -> None:
    req = order()
    # another process created it with our id, and our first lookup missed it (lagging read)
    other = server.add_order(
        {
            "symbol": "AAPL",
            "qty": 10,
            "side": "buy",
            "type": "market",
            "time_in_force": "day",
            "client_order_id": req.client_order_id,
        }
    )
    server.fail("GET", LOOKUP, Fault.error(404, f"order not found for {req.client_order_id}"))
    state = make_broker(server).submit(req)
    assert state.broker_order_id == other["id"]
    assert server.orders_created_by_client_id == {req.client_order_id: 1}
    [post] = server.calls("POST", "/v2/orders")
    assert post["n"] == 2  # the POST was answered 422, then found by lookup


def test_rejection_names_order_and_reason_not_keys(server: AlpacaTradingServer) -> None:
    req = order(qty=10_000)  # 1.9M of AAPL on 100k of cash
    broker = make_broker(server)
    with pytest.raises(BrokerError) as caught:
        broker.submit(req)
    message = str(caught.value)
    assert not isinstance(caught.value, UnknownOutcome)
    assert req.client_order_id in message and "AAPL" in message
    assert "403" in message and "insufficient buying power" in message
    assert KEY not in message and SECRET not in message
    assert server.orders_created_by_client_id == {}
    assert len(server.calls("POST", "/v2/orders")) == 1  # a refusal is final: not retried


def test_wrong_keys_are_refused_without_echoing_them(server: AlpacaTradingServer) -> None:
    broker = AlpacaBroker(KEY, "wrong-secret-zyxw", url_override=server.base_url, sleep=Sleeps())
    req = order()
    with pytest.raises(BrokerError, match="401") as caught:
        broker.submit(req)
    assert req.client_order_id in str(caught.value) and "wrong-secret-zyxw" not in str(caught.value)
    assert server.calls("POST", "/v2/orders") == []


def test_persistent_rate_limit_is_a_plain_error(server: AlpacaTradingServer) -> None:
    server.fail("POST", "/v2/orders", Fault.error(429), times=3)
    req = order()
    with pytest.raises(BrokerError, match="429") as caught:
        make_broker(server).submit(req)
    assert not isinstance(caught.value, UnknownOutcome)  # 429 means Alpaca did nothing: nothing in doubt
    assert req.client_order_id in str(caught.value)
    assert len(server.calls("POST", "/v2/orders")) == 3 and server.orders_created_by_client_id == {}


def test_persistent_5xx_is_unknown_outcome(server: AlpacaTradingServer) -> None:
    server.fail("POST", "/v2/orders", Fault.error(504), times=3)
    req = order()
    with pytest.raises(UnknownOutcome, match=req.client_order_id):
        make_broker(server).submit(req)
    assert len(server.calls("POST", "/v2/orders")) == 3 and server.orders_created_by_client_id == {}


def test_injected_403_is_a_rejection(server: AlpacaTradingServer) -> None:
    server.fail("POST", "/v2/orders", Fault.error(403, "account is not allowed to short"))
    req = order(side=Side.SELL)
    with pytest.raises(BrokerError, match="account is not allowed to short") as caught:
        make_broker(server).submit(req)
    assert req.client_order_id in str(caught.value)


def test_unreachable_server_is_unknown_outcome() -> None:
    with AlpacaTradingServer() as srv:
        url = srv.base_url
    broker = AlpacaBroker(KEY, SECRET, url_override=url, sleep=Sleeps(), timeout_s=1.0)
    req = order()
    with pytest.raises(UnknownOutcome) as caught:
        broker.submit(req)
    message = str(caught.value)
    assert req.client_order_id in message
    assert KEY not in message and SECRET not in message
    with pytest.raises(BrokerError, match="positions"):
        broker.positions()


def test_connection_lost_after_post_is_unknown_outcome(server: AlpacaTradingServer) -> None:
    for number in range(2, 30):  # request 1 (the first lookup) answers; then the link is gone
        server.fail_request(number, Fault.dropped())
    req = order()
    with pytest.raises(UnknownOutcome, match=req.client_order_id):
        make_broker(server).submit(req)
    assert len(server.calls("POST", "/v2/orders")) == 1  # never re-sent while the lookup cannot answer


def test_lookup_5xx_before_submit_is_retried(server: AlpacaTradingServer) -> None:
    server.fail("GET", LOOKUP, Fault.error(500))
    req = order()
    assert make_broker(server).submit(req).status == OrderStatus.FILLED
    assert server.orders_created_by_client_id == {req.client_order_id: 1}


def test_reads_time_out_and_retry(server: AlpacaTradingServer) -> None:
    server.fail("GET", "/v2/account", Fault.hang(FOREVER_S))  # answered only by a retry after the timeout
    account = make_broker(server, timeout_s=0.3).account()
    assert len(server.calls("GET", "/v2/account")) == 2
    assert account.cash == 100_000.0


def test_get_order(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    assert broker.get_order("ql-unknown") is None
    state = broker.submit(order())
    assert broker.get_order(state.client_order_id) == state


def test_positions_are_signed(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    broker.submit(order("AAPL", Side.BUY, 10))
    broker.submit(order("MSFT", Side.SELL, 5))
    assert broker.positions() == {"AAPL": 10.0, "MSFT": -5.0}


def test_account_and_clock(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    broker.submit(order("AAPL", Side.BUY, 10))
    account = broker.account()
    assert account.cash == pytest.approx(98_100.0)
    assert account.equity == pytest.approx(100_000.0)
    assert account.buying_power == pytest.approx(98_100.0)
    clock = broker.clock()
    assert clock.is_open is True
    assert clock.timestamp.tzinfo is not None and clock.next_close > clock.timestamp


def test_open_orders_and_cancel_all(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    broker.submit(order("AAPL", Side.BUY, 10))  # fills
    resting = [
        broker.submit(order("MSFT", Side.BUY, 1, type=OrderType.LIMIT, limit_price=400.0)),
        broker.submit(order("NVDA", Side.SELL, 2, type=OrderType.LIMIT, limit_price=130.0)),
    ]
    assert {o.client_order_id for o in broker.open_orders()} == {o.client_order_id for o in resting}
    assert all(o.status == OrderStatus.NEW for o in broker.open_orders())
    assert broker.cancel_all() == 2
    assert broker.open_orders() == []
    canceled = broker.get_order(resting[0].client_order_id)
    assert canceled is not None and canceled.status == OrderStatus.CANCELED


def test_close_all(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    broker.submit(order("AAPL", Side.BUY, 10))
    broker.submit(order("MSFT", Side.SELL, 5))
    broker.submit(order("NVDA", Side.BUY, 1, type=OrderType.LIMIT, limit_price=100.0))
    closing = broker.close_all()
    assert sorted((o.symbol, o.side, o.quantity, o.status) for o in closing) == [
        ("AAPL", Side.SELL, 10.0, OrderStatus.FILLED),
        ("MSFT", Side.BUY, 5.0, OrderStatus.FILLED),
    ]
    assert broker.positions() == {}
    assert broker.open_orders() == []  # cancel_orders=true took the resting limit with it
    [delete] = server.calls("DELETE", "/v2/positions")
    assert delete["query"]["cancel_orders"].lower() == "true"


def test_close_all_refusal_is_loud(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    broker.submit(order("AAPL", Side.BUY, 10))
    broker.submit(order("MSFT", Side.BUY, 1))
    server.close_refusals["MSFT"] = "insufficient qty available for order"
    with pytest.raises(BrokerError, match="MSFT: HTTP 403: insufficient qty available"):
        broker.close_all()
    assert broker.positions() == {"MSFT": 1.0}  # AAPL was closed; the refusal was not swallowed


def test_close_all_unknown_outcome_is_not_retried(server: AlpacaTradingServer) -> None:
    broker = make_broker(server)
    broker.submit(order("AAPL", Side.BUY, 10))
    server.fail("DELETE", "/v2/positions", Fault.accept_then_fail(504))
    with pytest.raises(UnknownOutcome, match="close all"):
        broker.close_all()
    assert len(server.calls("DELETE", "/v2/positions")) == 1
    assert broker.positions() == {}


SWEEP_FAULTS: dict[str, Fault] = {
    "429": Fault.error(429),
    "504": Fault.error(504),
    "500": Fault.error(500),
    "accept_then_fail": Fault.accept_then_fail(504),
    "accept_then_hang": Fault.accept_then_hang(30.0),
    "hang": Fault.hang(30.0),
}


def test_fault_injection_sweep() -> None:
    """Every fault on the first POST of 5 distinct orders: each order ends up existing exactly once."""
    summary: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    for name, fault in SWEEP_FAULTS.items():
        with AlpacaTradingServer(prices=PRICES) as srv:
            broker = make_broker(srv, timeout_s=0.3)
            ids = []
            for i in range(5):
                req = order("AAPL", Side.BUY, 1, leg=f"sweep-{name}-{i}")
                srv.fail("POST", "/v2/orders", fault)
                state = broker.submit(req)
                assert state.client_order_id == req.client_order_id
                assert state.status == OrderStatus.FILLED
                ids.append(req.client_order_id)
            assert set(srv.orders_created_by_client_id) == set(ids)
            assert max(srv.orders_created_by_client_id.values()) == 1
            for cid in ids:
                found = broker.get_order(cid)
                assert found is not None and found.filled_quantity == 1
            summary[name] = {
                "orders": len(ids),
                "posts": len(srv.calls("POST", "/v2/orders")),
                "duplicates": sum(n - 1 for n in srv.orders_created_by_client_id.values()),
            }
    print(f"fault sweep ({time.monotonic() - started:.1f}s): {summary}")
    assert sum(s["duplicates"] for s in summary.values()) == 0
    # blind retries would have re-POSTed after the accepting faults; the lookup stopped that
    assert summary["accept_then_fail"]["posts"] == summary["accept_then_hang"]["posts"] == 5
    assert summary["504"]["posts"] == summary["hang"]["posts"] == summary["429"]["posts"] == 10
