"""The simulated broker: next-bar fills, costs, partial fills, rejections, and the backtest's brackets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtests.engine import BacktestConfig, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.base import Strategy, StrategyParams, no_levels
from strategies.builtin import DONCHIAN_BREAKOUT
from strategies.positions import next_direction
from trading.brokers.base import OrderRequest, OrderStatus, client_order_id
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.models import Side

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def _bar(i: int, o: float, h: float | None = None, lo: float | None = None, c: float | None = None) -> dict[str, Any]:
    return {"ts": T0 + timedelta(days=i), "open": o, "high": h or o, "low": lo or o, "close": c or o}


def _order(cid: str, side: Side = Side.BUY, qty: float = 10, symbol: str = "AAA", **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=qty, **kw)


def test_orders_fill_at_the_next_bar_open_with_costs() -> None:
    broker = SimulatedBroker(SimConfig(slippage_bps=10, commission_per_share=0.01), cash=10_000)
    broker.on_bar({"AAA": _bar(0, 100, 101, 99, 100)})
    broker.submit(_order("a"))
    assert broker.positions() == {}  # nothing fills on the bar the decision was made
    [fill] = broker.on_bar({"AAA": _bar(1, 102, 103, 101, 102)})
    assert (fill.ts, fill.price, fill.quantity, fill.commission) == (T0 + timedelta(days=1), pytest.approx(102 * 1.001), 10, pytest.approx(0.1 * 1.001))  # per share as the backtest charges it: of the unslipped price
    assert broker.cash == pytest.approx(10_000 - 10 * 102 * 1.001 - 0.1)
    assert broker.get_order("a").status == OrderStatus.FILLED  # type: ignore[union-attr]


def test_the_same_client_id_is_one_order() -> None:
    broker = SimulatedBroker(cash=10_000)
    first = broker.submit(_order("same"))
    again = broker.submit(_order("same", qty=999))
    assert again == first
    assert len(broker.on_bar({"AAA": _bar(1, 100)})) == 1 and broker.positions() == {"AAA": 10}


def test_rejections_and_partial_fills_are_seeded() -> None:
    def run(seed: int) -> tuple[list[str], list[float]]:
        broker = SimulatedBroker(SimConfig(seed=seed, reject_prob=0.4, partial_fill_prob=0.5), cash=1e9)
        states = [broker.submit(_order(f"o{i}", symbol=f"S{i}", qty=100)) for i in range(30)]
        fills = broker.on_bar({f"S{i}": _bar(1, 10) for i in range(30)})
        return [s.client_order_id for s in states if s.status == OrderStatus.REJECTED], [f.quantity for f in fills]

    assert run(1) == run(1)
    assert run(1) != run(2)
    rejected, quantities = run(1)
    assert 0 < len(rejected) < 30 and any(q < 100 for q in quantities)


def test_partial_fills_complete_on_later_bars() -> None:
    broker = SimulatedBroker(SimConfig(partial_fill_prob=1.0, partial_fill_min=0.3), cash=1e6)
    broker.submit(_order("p", qty=100))
    filled = [f.quantity for i in range(1, 30) for f in broker.on_bar({"AAA": _bar(i, 10)})]
    assert len(filled) > 1 and sum(filled) == 100
    assert broker.get_order("p").filled_quantity == sum(filled)  # type: ignore[union-attr]


def test_no_cash_no_naked_short() -> None:
    broker = SimulatedBroker(cash=500)
    broker.submit(_order("big", qty=100))
    broker.submit(_order("short", side=Side.SELL, qty=5, symbol="BBB"))
    fills = broker.on_bar({"AAA": _bar(1, 10), "BBB": _bar(1, 10)})
    assert [(f.symbol, f.quantity) for f in fills] == [("AAA", 50)]  # what cash buys; no short sale
    assert broker.cash == pytest.approx(0) and broker.get_order("short").status == OrderStatus.REJECTED  # type: ignore[union-attr]


def test_close_all_flattens_at_the_next_open() -> None:
    broker = SimulatedBroker(cash=10_000)
    broker.submit(_order("a"))
    broker.on_bar({"AAA": _bar(1, 100)})
    broker.close_all()
    broker.on_bar({"AAA": _bar(2, 90)})
    assert broker.positions() == {} and broker.cash == pytest.approx(10_000 - 100)



def test_an_order_sent_after_a_bar_opened_fills_at_the_next_open_not_that_one() -> None:
    """Daily bars: a flatten sent at 15:50 on day 1 cannot fill at day 1's 09:30 open (a price from before it)."""
    broker = SimulatedBroker(SimConfig(), cash=10_000)
    broker.on_bar({"AAA": _bar(0, 100)})
    broker.submit(_order("entry"))
    broker.on_bar({"AAA": _bar(1, 101)})
    assert broker.positions() == {"AAA": 10}
    broker.placed_at = T0 + timedelta(days=1, hours=6, minutes=20)  # 15:50 New York on day 1, after its bar opened
    broker.close_all()
    broker = SimulatedBroker.from_state(broker.to_state())  # the next run continues from the saved state
    assert broker.on_bar({"AAA": _bar(1, 101)}) == []  # re-seeing day 1 does not fill it
    [fill] = broker.on_bar({"AAA": _bar(2, 97)})
    assert (fill.ts, fill.price, fill.side) == (T0 + timedelta(days=2), 97, Side.SELL)
    assert broker.positions() == {}



def test_a_pending_flatten_is_kept_by_the_next_days_flatten_so_it_fills() -> None:
    """Daily bars reach the lake after the close: the next day's flatten comes before the bar the first
    one waits for. Replacing it (sent later, so filling later still) would never flatten the position."""
    broker = SimulatedBroker(SimConfig(), cash=10_000)
    broker.on_bar({"AAA": _bar(0, 100)})
    broker.submit(_order("entry"))
    broker.on_bar({"AAA": _bar(1, 101)})
    broker.placed_at = T0 + timedelta(days=1, hours=6, minutes=25)  # 15:55 on day 1
    [first] = broker.close_all()
    broker.placed_at = T0 + timedelta(days=2, hours=6, minutes=25)  # 15:55 on day 2: day 2's bar not in yet
    [again] = broker.close_all()
    assert again.client_order_id == first.client_order_id and again.status.is_open
    assert [o.client_order_id for o in broker.open_orders()] == [first.client_order_id]
    [fill] = broker.on_bar({"AAA": _bar(2, 97)})
    assert (fill.ts, fill.price) == (T0 + timedelta(days=2), 97) and broker.positions() == {}


@pytest.mark.parametrize("allow_short", [False, True], ids=["long-only", "long-short"])
def test_brackets_match_the_backtest_engine_bar_for_bar(allow_short: bool) -> None:
    """Donchian with ATR brackets on one symbol: the broker's fills are the engine's orders."""
    bars = SyntheticSource(seed=5).fetch(["AAPL"], "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    p = DONCHIAN_BREAKOUT.params(entry_window=15, exit_window=8, allow_short=allow_short)
    engine = run_backtest(bars, DONCHIAN_BREAKOUT, p, BacktestConfig(init_cash=100_000, allow_short=allow_short))
    engine_orders = {r["ts"]: (r["side"], r["size"]) for r in engine.orders.iter_rows(named=True)}
    signals = DONCHIAN_BREAKOUT.signals(bars, p).sort("ts").to_dicts()
    broker = SimulatedBroker(config=SimConfig(allow_short=allow_short), cash=100_000)
    for t, row in enumerate(signals[:-1]):
        broker.on_bar({"AAPL": row})
        position = broker.positions().get("AAPL", 0)
        held = (position > 0) - (position < 0)
        nxt = next_direction(held, row["entry_long"], row["exit_long"], row["entry_short"], row["exit_short"])
        order = engine_orders.get(signals[t + 1]["ts"])
        if nxt == held or order is None:
            continue
        side, size = Side(order[0]), order[1]
        levels = {"stop": row["stop"], "target1": row["target1"], "target2": row["target2"]} if held == 0 else {}
        cid = client_order_id("d", "AAPL", row["ts"], side)
        broker.submit(OrderRequest(client_order_id=cid, symbol="AAPL", side=side, quantity=size, **levels))
    broker.on_bar({"AAPL": signals[-1]})
    want = engine.orders.select("ts", "side", "size", "price").rows()
    got = [(f.ts, f.side.value, f.quantity, f.price) for f in broker.fills]
    assert len(want) > 10
    assert got == [(ts, side, size, pytest.approx(price, rel=1e-12)) for ts, side, size, price in want]
    # Half exits happened on every side the run trades.
    position_now, halves = 0.0, set()
    for _, side, size, _ in want:
        after = position_now + (size if side == "buy" else -size)
        if position_now * after > 0 and abs(after) < abs(position_now):
            halves.add("long" if position_now > 0 else "short")
        position_now = after
    assert halves == ({"long", "short"} if allow_short else {"long"})


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["AAA", "BBB", "CCC"]),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(min_value=1, max_value=400),
            st.floats(min_value=5, max_value=200),
        ),
        min_size=1,
        max_size=40,
    ),
    partial=st.floats(min_value=0, max_value=1),
)
def test_cash_never_negative_and_positions_are_the_sum_of_fills(steps: list[tuple[str, Side, int, float]], partial: float) -> None:
    broker = SimulatedBroker(SimConfig(partial_fill_prob=partial, commission_bps=5, slippage_bps=5), cash=20_000)
    for i, (symbol, side, qty, price) in enumerate(steps):
        broker.submit(_order(f"o{i}", side=side, qty=qty, symbol=symbol))
        broker.on_bar({s: _bar(i, price * (1 + 0.01 * j), price * 1.02, price * 0.98, price) for j, s in enumerate(["AAA", "BBB", "CCC"])})
        assert broker.cash >= -1e-9
        assert all(q >= 0 for q in broker.positions().values())
    for symbol in ("AAA", "BBB", "CCC"):
        total = sum(f.signed_quantity for f in broker.fills if f.symbol == symbol)
        assert broker.positions().get(symbol, 0.0) == pytest.approx(total)


# (config, orders per bar as (side, quantity) sent before that bar's open, opens, expected fills)
# The naive entry (the equity before the closing commission, the entry's on top) is one share more.
REVERSALS: list[tuple[dict[str, Any], list[tuple[Side, float] | None], list[float], list[tuple[Side, float]]]] = [
    # Long 99 at 100, cash 80.2; at 250 the long's sale leaves 24,780.7 = 98.9 x 250.5: short 98, not 99.
    ({"commission_bps": 20}, [(Side.BUY, 99), (Side.SELL, 99 + 99)], [100, 250], [(Side.BUY, 99), (Side.SELL, 197)]),
    # Short from flat with slippage: 10,000 / (99.9 x 1.002) = 99.9 -> 99, not 100.
    ({"commission_bps": 20, "slippage_bps": 10}, [(Side.SELL, 100)], [100], [(Side.SELL, 99)]),
    # Short 99 at 100, cash 19,880.2; at 50 the cover leaves 14,920.3 = 297.8 x 50.1: long 297, not 298.
    ({"commission_bps": 20}, [(Side.SELL, 99), (Side.BUY, 99 + 298)], [100, 50], [(Side.SELL, 99), (Side.BUY, 99 + 297)]),
    # A per-share commission: long 99 at 100 (cash 50.5); at 250, 24,751 / 250.5 = 98.8: short 98.
    ({"commission_per_share": 0.5}, [(Side.BUY, 99), (Side.SELL, 99 + 99)], [100, 250], [(Side.BUY, 99), (Side.SELL, 197)]),
    # Fractional: the unfloored size, the commission paid from what the long's sale left.
    (
        {"commission_bps": 20, "fractional": True},
        [(Side.BUY, 10_000 / 100.2), (Side.SELL, 10_000 / 100.2 + 100)],
        [100, 250],
        [(Side.BUY, 10_000 / 100.2), (Side.SELL, 10_000 / 100.2 + 10_000 / 100.2 * 250 * 0.998 / 250.5)],
    ),
]


@pytest.mark.parametrize(
    ("config", "orders", "opens", "expected"),
    REVERSALS,
    ids=["long-to-short", "short-from-flat-slippage", "short-to-long", "per-share", "fractional"],
)
def test_an_entry_never_commits_more_than_the_cash_there_is(
    config: dict[str, Any], orders: list[tuple[Side, float]], opens: list[float], expected: list[tuple[Side, float]]
) -> None:
    broker = SimulatedBroker(SimConfig(allow_short=True, **config), cash=10_000)
    for i, ((side, qty), o) in enumerate(zip(orders, opens, strict=True)):
        broker.submit(_order(f"o{i}", side=side, qty=qty))
        broker.on_bar({"AAA": _bar(i, o)})
        assert broker.cash >= 0
        held = broker.positions().get("AAA", 0.0)
        # What the position would cost to close, its commission included, never exceeds the cash.
        close_cost = abs(held) * o * (1 + config.get("slippage_bps", 0) / 1e4) * (1 + config.get("commission_bps", 0) / 1e4)
        assert held >= 0 or close_cost + abs(held) * config.get("commission_per_share", 0) <= broker.cash + 1e-9
    assert [f.side for f in broker.fills] == [s for s, _ in expected]
    assert [f.quantity for f in broker.fills] == [pytest.approx(q, rel=1e-12) for _, q in expected]


def test_the_broker_fills_the_engines_reversals_and_cuts_naive_ones() -> None:
    """Long, short, long on one symbol with commission and slippage: the engine's orders fill as they
    are; the same orders one share larger are cut back to the engine's sizes."""
    opens = [100.0, 100.0, 100.0, 250.0, 200.0, 200.0]
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    bars = pl.DataFrame(
        {
            "symbol": "AAA",
            "timeframe": "1d",
            "ts": [start + timedelta(days=i) for i in range(len(opens))],
            "open": opens,
            "high": opens,
            "low": opens,
            "close": opens,
            "volume": 1000.0,
            "entry_long": [False, True, False, True, False, False],
            "entry_short": [False, False, True, False, False, False],
        }
    )
    strategy = Strategy(
        name="scripted",
        params_model=StrategyParams,
        compute=lambda b, p: b.with_columns(
            pl.lit(False).alias("exit_long"), pl.lit(False).alias("exit_short"), pl.lit(1.0).alias("size"), *no_levels()
        ),
        lookback=lambda p: 1,
    )
    costs = {"fees_bps": 20.0, "slippage_bps": 10.0}
    engine = run_backtest(bars, strategy, StrategyParams(), BacktestConfig(init_cash=10_000, allow_short=True, **costs))
    want = engine.orders.select("ts", "side", "size", "price").rows()
    assert [(side, size) for _, side, size, _ in want] == [("buy", 99.0), ("sell", 197.0), ("buy", 245.0)]
    for extra in (0.0, 1.0):
        broker = SimulatedBroker(SimConfig(allow_short=True, commission_bps=20, slippage_bps=10), cash=10_000)
        sent = {ts: (Side(side), size + extra) for ts, side, size, _ in want}
        for i, row in enumerate(bars.iter_rows(named=True)):
            if row["ts"] in sent:
                side, qty = sent[row["ts"]]
                broker.submit(_order(f"{extra}-{i}", side=side, qty=qty))
            broker.on_bar({"AAA": row})
            broker.cancel_all()  # a cut order's remainder would stay open: each bar decides afresh
            assert broker.cash >= 0
        got = [(f.ts, f.side.value, f.quantity, f.price) for f in broker.fills]
        assert got == [(ts, side, size, pytest.approx(price, rel=1e-12)) for ts, side, size, price in want]
