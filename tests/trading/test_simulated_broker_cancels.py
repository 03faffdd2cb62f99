"""A cancel takes effect when it is sent: an order whose fill bar had opened by then is filled, not canceled.

The faulted soak year (seed 16) found the case: MSFT bought by a decision on Thu 2026-04-16, which by
the fill rule fills at Fri 04-17's open; Friday's window-end flatten (15:55) came before the broker
had lived through Friday's daily bar (it reaches the lake on Monday's open), and it canceled the
order. The account then held nothing where a backtest (and a real venue) held MSFT and sold it at
Monday's open.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from trading.brokers.base import OrderRequest, OrderStatus
from trading.brokers.simulated import SimConfig, SimulatedBroker, next_bar_open
from trading.models import Side

NY = ZoneInfo("America/New_York")


def _ny(day: int, hour: int, minute: int = 0, month: int = 4) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=NY)


def _daily(day: int, price: float) -> dict[str, Any]:
    """MSFT's daily bar of 2026-04-`day`, stamped at the session's open (as the lake stamps them)."""
    return {"symbol": "MSFT", "timeframe": "1d", "ts": _ny(day, 9, 30), "open": price, "high": price, "low": price, "close": price}


def _run(broker: SimulatedBroker, now: datetime, *bars: dict[str, Any]) -> tuple[SimulatedBroker, list[Any]]:
    """One scheduled run: the saved account continues, lives through the bars the lake has, sends at `now`."""
    broker = SimulatedBroker.from_state(broker.to_state())
    fills = [f for bar in bars for f in broker.on_bar({"MSFT": bar})]
    broker.placed_at = now
    return broker, fills


def _flatten(broker: SimulatedBroker, kill_switch: bool) -> list[Any]:
    if kill_switch:
        broker.cancel_all()  # the executor's kill switch: cancel everything, then close everything
    return broker.close_all()


@pytest.mark.parametrize("kill_switch", [False, True], ids=["flatten", "kill-switch"])
def test_an_order_whose_fill_bar_opened_before_the_flatten_fills_and_is_closed(kill_switch: bool) -> None:
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    broker.on_bar({"MSFT": _daily(15, 400.0)})
    broker, _ = _run(broker, _ny(16, 11), _daily(15, 400.0))  # Thursday 11:00: the lake has Wednesday's bar
    broker.submit(OrderRequest(client_order_id="ql-msft", symbol="MSFT", side=Side.BUY, quantity=10.0))
    broker, fills = _run(broker, _ny(17, 15, 55), _daily(16, 401.0))  # Friday's flatten: Friday's bar not in yet
    assert fills == []
    closing = _flatten(broker, kill_switch)
    # Bought at Friday's open already: the order stands, and the flatten closes the position it makes.
    assert broker.get_order("ql-msft").status == OrderStatus.NEW  # type: ignore[union-attr]
    assert [(c.symbol, c.side, c.quantity) for c in closing] == [("MSFT", Side.SELL, 10.0)]
    broker, fills = _run(broker, _ny(20, 9, 35), _daily(17, 402.0))  # Monday: Friday's bar arrives
    assert [(f.client_order_id, f.side, f.quantity, f.price, f.ts) for f in fills] == [("ql-msft", Side.BUY, 10.0, 402.0, _ny(17, 9, 30))]
    broker, fills = _run(broker, _ny(21, 9, 35), _daily(20, 399.0))  # Tuesday: Monday's bar, the close's
    assert [(f.client_order_id, f.side, f.quantity, f.price, f.ts) for f in fills] == [(closing[0].client_order_id, Side.SELL, 10.0, 399.0, _ny(20, 9, 30))]
    assert broker.positions() == {} and broker.cash == pytest.approx(100_000.0 - 10 * 402.0 + 10 * 399.0)


@pytest.mark.parametrize("kill_switch", [False, True], ids=["flatten", "kill-switch"])
def test_an_order_sent_in_the_flattens_session_is_canceled(kill_switch: bool) -> None:
    """Sent Friday 11:00, its fill bar is Monday's: the flatten at 15:55 cancels it, and nothing is to close."""
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    broker.on_bar({"MSFT": _daily(16, 400.0)})
    broker.placed_at = _ny(17, 11)
    broker.submit(OrderRequest(client_order_id="ql-msft", symbol="MSFT", side=Side.BUY, quantity=10.0))
    broker.placed_at = _ny(17, 15, 55)
    assert _flatten(broker, kill_switch) == []
    state = broker.get_order("ql-msft")
    assert state is not None and (state.status, state.reason) == (OrderStatus.CANCELED, "cancel all")
    broker, fills = _run(broker, _ny(21, 9, 35), _daily(17, 402.0), _daily(20, 399.0))
    assert fills == [] and broker.positions() == {}


def test_an_order_kept_by_a_flatten_is_canceled_at_the_first_bar_after_it() -> None:
    """The bar it waited for never came (a skipped bar): the next one opened after the cancel, so it is
    canceled there, and the flatten's close finds nothing to close."""
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    broker.on_bar({"MSFT": _daily(15, 400.0)})
    broker.placed_at = _ny(16, 11)
    broker.submit(OrderRequest(client_order_id="ql-msft", symbol="MSFT", side=Side.BUY, quantity=10.0))
    broker, _ = _run(broker, _ny(17, 15, 55), _daily(16, 401.0))
    [close] = broker.close_all()
    broker, fills = _run(broker, _ny(21, 9, 35), _daily(20, 399.0))  # no bar of Friday
    assert fills == [] and broker.positions() == {}
    assert broker.get_order("ql-msft").status == OrderStatus.CANCELED  # type: ignore[union-attr]
    assert broker.get_order(close.client_order_id).reason == "nothing held to close at the fill"  # type: ignore[union-attr]


def test_a_held_position_with_an_exit_in_flight_is_not_closed_twice() -> None:
    """Long 10, an exit sent Thursday (it sold at Friday's open): Friday's flatten has nothing more to close."""
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    broker.submit(OrderRequest(client_order_id="ql-buy", symbol="MSFT", side=Side.BUY, quantity=10.0))
    broker.on_bar({"MSFT": _daily(15, 400.0)})
    broker.placed_at = _ny(16, 11)
    broker.submit(OrderRequest(client_order_id="ql-sell", symbol="MSFT", side=Side.SELL, quantity=10.0, reduce_only=True))
    broker, _ = _run(broker, _ny(17, 15, 55), _daily(16, 401.0))
    assert broker.close_all() == []
    broker, fills = _run(broker, _ny(21, 9, 35), _daily(17, 402.0), _daily(20, 399.0))
    assert [(f.client_order_id, f.price) for f in fills] == [("ql-sell", 402.0)] and broker.positions() == {}


@pytest.mark.parametrize(
    ("after", "bar", "opens"),
    [
        (_ny(16, 11), timedelta(days=1), _ny(17, 9, 30)),  # daily: the next session's open
        (_ny(17, 11), timedelta(days=1), _ny(20, 9, 30)),  # over the weekend
        (_ny(17, 9, 30), timedelta(days=1), _ny(17, 9, 30)),  # at the open itself
        (_ny(17, 11, 0) + timedelta(seconds=30), timedelta(minutes=1), _ny(17, 11, 1)),  # minutes: the next one
        (_ny(17, 15, 59) + timedelta(seconds=1), timedelta(minutes=1), _ny(20, 9, 30)),  # after the last minute bar
        (_ny(27, 12, 59, month=11) + timedelta(seconds=1), timedelta(minutes=5), _ny(30, 9, 30, month=11)),  # the half day's close
        (_ny(17, 10, 1), timedelta(minutes=15), _ny(17, 10, 15)),  # 15-minute bars from the open
    ],
)
def test_next_bar_open(after: datetime, bar: timedelta, opens: datetime) -> None:
    assert next_bar_open(after, bar) == opens


def test_a_close_saved_before_whole_was_kept_is_still_kept() -> None:
    """A state saved by the broker of session 6 (no `whole`): its pending close is kept by the next flatten."""
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    broker.submit(OrderRequest(client_order_id="ql-buy", symbol="MSFT", side=Side.BUY, quantity=10.0))
    broker.on_bar({"MSFT": _daily(15, 400.0)})
    broker.placed_at = _ny(15, 15, 55)
    [close] = broker.close_all()
    state = broker.to_state()
    for item in state["orders"]:
        del item["whole"], item["cancel_at"]
    broker = SimulatedBroker.from_state(state)
    broker.placed_at = _ny(15, 15, 58)  # a kill switch after the flatten, the same session
    assert broker.close_all() == [broker.get_order(close.client_order_id)]
    assert [o.client_order_id for o in broker.open_orders()] == [close.client_order_id]
