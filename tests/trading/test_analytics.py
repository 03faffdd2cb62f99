"""Paper-trading analytics: FIFO round trips, equity, performance, breakdowns, drift against the backtest."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import DONCHIAN_BREAKOUT
from strategies.positions import next_direction
from trading.analytics import (
    CAUSES,
    breakdown,
    drift_report,
    equity_curve,
    fills_frame,
    fills_from_ledger,
    performance,
    round_trips,
)
from trading.brokers.base import Fill, OrderRequest, client_order_id
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.events import Event, EventType
from trading.ledger import Ledger, replay_portfolio
from trading.models import Mode, Side

T0 = datetime(2024, 1, 8, 14, 30, tzinfo=UTC)  # a Monday, 09:30 in New York
_ids = itertools.count()


def _fill(symbol: str, side: str, qty: float, price: float, day: float, commission: float = 0.0) -> Fill:
    n = next(_ids)
    return Fill(
        fill_id=f"f{n}",
        client_order_id=f"o{n}",
        symbol=symbol,
        side=Side(side),
        quantity=qty,
        price=price,
        commission=commission,
        ts=T0 + timedelta(days=day),
    )


def _hand_fills() -> list[Fill]:
    """Buy 10@100, buy 10@110, sell 15@120, sell 5@90 (0.1/share commission); short 10@50, cover @45."""
    return [
        _fill("AAA", "buy", 10, 100, 0, 1.0),
        _fill("AAA", "buy", 10, 110, 1, 1.0),
        _fill("BBB", "sell", 10, 50, 1, 0.5),
        _fill("AAA", "sell", 15, 120, 2, 1.5),
        _fill("BBB", "buy", 10, 45, 3, 0.5),
        _fill("AAA", "sell", 5, 90, 4, 0.5),
    ]


def test_fifo_round_trips_by_hand() -> None:
    trips = round_trips(fills_frame(_hand_fills()))
    got = trips.select("symbol", "side", "quantity", "entry_price", "exit_price", "commission", "pnl").rows()
    assert got == [
        # 10 of the first lot at 120: 200 gross, its 1.0 entry + 10/15 of the 1.5 exit commission
        ("AAA", "long", 10, 100, 120, pytest.approx(2.0), pytest.approx(198.0)),
        # 5 of the second lot at 120: 50 gross, half its entry commission + 5/15 of the exit one
        ("AAA", "long", 5, 110, 120, pytest.approx(1.0), pytest.approx(49.0)),
        ("BBB", "short", 10, 50, 45, pytest.approx(1.0), pytest.approx(49.0)),
        # the last 5 of the second lot at 90: -100 gross
        ("AAA", "long", 5, 110, 90, pytest.approx(1.0), pytest.approx(-101.0)),
    ]
    assert trips["return_pct"].to_list() == pytest.approx([19.8, 49 / 550 * 100, 9.8, -101 / 550 * 100])
    assert trips["holding_time"].to_list() == [timedelta(days=2), timedelta(days=1), timedelta(days=2), timedelta(days=3)]
    assert trips["entry_ts"].dtype == pl.Datetime("us", "UTC")


def test_a_fill_through_zero_closes_and_opens_a_short() -> None:
    fills = [_fill("AAA", "buy", 10, 100, 0, 1.0), _fill("AAA", "sell", 30, 90, 1, 3.0), _fill("AAA", "buy", 20, 80, 2)]
    trips = round_trips(fills_frame(fills))
    assert trips.select("side", "quantity", "entry_price", "exit_price", "pnl").rows() == [
        ("long", 10, 100, 90, pytest.approx(-100 - 1 - 1)),
        ("short", 20, 90, 80, pytest.approx(200 - 2)),
    ]


def test_fifo_total_equals_the_ledger_replay(tmp_path: Path) -> None:
    """Average cost (the ledger) and FIFO split P&L differently between trades; once flat the totals agree."""
    fills = _hand_fills()
    events = [Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.PAPER, payload={"amount": 10_000.0})]
    events += [Event(type=EventType.FILL, run_id="r", mode=Mode.PAPER, payload=f.model_dump(mode="json"), symbol=f.symbol, as_of=f.ts) for f in fills]
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.append_many(events)
    frame = fills_from_ledger(ledger)
    assert frame.equals(fills_frame(fills)) and fills_from_ledger(events).equals(frame)
    portfolio = replay_portfolio(ledger)
    ledger.close()
    trips = round_trips(frame)
    assert portfolio.positions == {}
    assert float(trips["pnl"].sum()) == pytest.approx(portfolio.realized_pnl - portfolio.commissions)
    assert float((trips["pnl"] + trips["commission"]).sum()) == pytest.approx(portfolio.realized_pnl) == 150 + 50
    assert replay_portfolio(events).realized_pnl == pytest.approx(portfolio.realized_pnl)


def _marks(rows: list[tuple[float, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(T0 + timedelta(days=d), s, c) for d, s, c in rows], schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String, "close": pl.Float64}, orient="row"
    )


def test_equity_curve_by_hand() -> None:
    fills = fills_frame([_fill("AAA", "buy", 10, 100, 0, 1.0), _fill("AAA", "sell", 10, 104, 2, 1.0)])
    marks = _marks([(0, "AAA", 101), (1, "AAA", 105), (2, "AAA", 103)])
    curve = equity_curve(fills, marks, 10_000)
    assert curve.columns == ["ts", "cash", "positions_value", "equity"]
    assert curve.select("cash", "positions_value", "equity").rows() == [
        (8_999, 1_010, 10_009),  # the fill at the bar's open, the mark at its close
        (8_999, 1_050, 10_049),
        (10_038, 0, 10_038),
    ]
    assert curve["ts"].to_list() == marks["ts"].to_list()


def test_equity_curve_values_a_position_before_its_first_mark_at_the_fill_price() -> None:
    fills = fills_frame([_fill("AAA", "buy", 10, 100, 0), _fill("BBB", "buy", 5, 20, 0)])
    curve = equity_curve(fills, _marks([(0, "AAA", 101), (1, "AAA", 102), (1, "BBB", 22)]), 5_000)
    assert curve["equity"].to_list() == pytest.approx([5_000 + 10 + 0, 5_000 + 20 + 10])


def test_performance_by_hand() -> None:
    fills = fills_frame(_hand_fills())
    marks = _marks([(d, s, c) for d in range(5) for s, c in (("AAA", 100 + 5 * d), ("BBB", 50 - d))])
    perf = performance(fills, marks, 10_000)
    # Trips after commissions: 198, 49, 49, -101
    assert perf["trade_count"] == 4 and perf["win_rate"] == 0.75
    assert perf["profit_factor"] == pytest.approx(296 / 101)
    assert perf["expectancy"] == pytest.approx(195 / 4)
    assert perf["commissions"] == pytest.approx(5.0) and perf["unrealized_pnl"] == 0
    assert perf["realized_pnl"] == pytest.approx(200.0)
    assert perf["total_pnl"] == pytest.approx(195.0) == perf["final_equity"] - 10_000
    curve = equity_curve(fills, marks, 10_000)
    assert curve["equity"][-1] == pytest.approx(perf["final_equity"])
    assert 0 <= perf["max_drawdown"] < 1 and perf["sharpe"] == perf["sharpe"]  # not NaN
    assert perf["total_return"] == pytest.approx(curve["equity"][-1] / curve["equity"][0] - 1)


def test_performance_with_an_open_position_splits_realized_and_unrealized() -> None:
    fills = fills_frame([_fill("AAA", "buy", 10, 100, 0, 1.0), _fill("AAA", "buy", 10, 110, 1, 1.0), _fill("AAA", "sell", 5, 120, 2, 0.5)])
    perf = performance(fills, _marks([(0, "AAA", 100), (1, "AAA", 110), (2, "AAA", 118)]), 10_000)
    assert perf["realized_pnl"] == pytest.approx(5 * (120 - 105))  # average cost, as the ledger
    assert perf["unrealized_pnl"] == pytest.approx(15 * (118 - 105))
    assert perf["total_pnl"] == pytest.approx(75 + 195 - 2.5) == perf["final_equity"] - 10_000
    assert perf["trade_count"] == 1


def test_breakdown_uses_new_york_time() -> None:
    fills = [
        _fill("AAA", "buy", 10, 100, 0),
        _fill("AAA", "sell", 10, 110, 0),  # Monday 14:30 UTC = 09:30 New York (winter)
        _fill("BBB", "buy", 10, 50, 0),
    ]
    late = Fill(fill_id="late", client_order_id="late", symbol="BBB", side=Side.SELL, quantity=10, price=45, ts=datetime(2024, 1, 9, 3, 0, tzinfo=UTC))
    trips = round_trips(fills_frame([*fills, late]))  # Tuesday 03:00 UTC = Monday 22:00 New York
    by_day = breakdown(trips, "weekday")
    assert by_day.rows() == [("Monday", 2, 0.5, pytest.approx(50.0), pytest.approx((10 - 10) / 2))]
    tuesday = _fill("AAA", "buy", 10, 100, 1), _fill("AAA", "sell", 10, 90, 8)  # exits on Tuesday, then on Monday
    days = breakdown(round_trips(fills_frame([*fills, late, *tuesday])), "weekday")
    assert days["weekday"].to_list() == ["Monday", "Tuesday"]  # named, in week order
    assert breakdown(trips, "hour").select("hour", "trades", "pnl").rows() == [(9, 1, 100.0), (22, 1, -50.0)]
    by_symbol = breakdown(trips, "symbol")
    assert by_symbol.select("symbol", "win_rate", "mean_return_pct").rows() == [("AAA", 1.0, 10.0), ("BBB", 0.0, -10.0)]
    with pytest.raises(ValueError, match="breakdown by"):
        breakdown(trips, "month")  # type: ignore[arg-type]


# -- drift ---------------------------------------------------------------------------------------------

_Row = tuple[float, str, str, float, float]  # day, symbol, side, quantity, price
_BACKTEST: list[_Row] = [
    (1, "AAA", "buy", 100, 50.0),
    (2, "BBB", "buy", 10, 200.0),
    (5, "AAA", "sell", 100, 55.0),
    (6, "BBB", "sell", 10, 190.0),
]


def _orders(rows: Sequence[_Row], fees: float = 0.0) -> pl.DataFrame:
    return pl.DataFrame(
        [(T0 + timedelta(days=d), s, side, q, p, fees) for d, s, side, q, p in rows],
        schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String, "side": pl.String, "size": pl.Float64, "price": pl.Float64, "fees": pl.Float64},
        orient="row",
    )


def _paper(rows: Sequence[_Row], commission: float = 0.0, worse_bps: float = 0.0) -> pl.DataFrame:
    def price(side: str, p: float) -> float:
        return p * (1 + worse_bps / 1e4) if side == "buy" else p * (1 - worse_bps / 1e4)

    return fills_frame(_fill(s, side, q, price(side, p), d, commission) for d, s, side, q, p in rows)


_WITHOUT_AAA = [r for r in _BACKTEST if r[1] != "AAA"]
_EXTRA = [*_BACKTEST, (3, "CCC", "buy", 5, 10.0), (4, "CCC", "sell", 5, 12.0)]
_PARTIAL = [(1, "AAA", "buy", 60, 50.0), (2, "BBB", "buy", 10, 200.0), (5, "AAA", "sell", 60, 55.0), (6, "BBB", "sell", 10, 190.0)]

DRIFT_CASES: dict[str, tuple[pl.DataFrame, pl.DataFrame, dict[str, float], dict[str, int]]] = {
    "identical": (_paper(_BACKTEST), _orders(_BACKTEST), {}, {"matched": 4}),
    "5 bps worse": (
        _paper(_BACKTEST, worse_bps=5),
        _orders(_BACKTEST),
        {"slippage": 5e-4 * (100 * 50 + 10 * 200 + 100 * 55 + 10 * 190)},
        {"matched": 4},
    ),
    "commission": (_paper(_BACKTEST, commission=1.0), _orders(_BACKTEST, fees=0.25), {"commission": 4 * (1.0 - 0.25)}, {"matched": 4}),
    "missing trade": (_paper(_WITHOUT_AAA), _orders(_BACKTEST), {"missed_trades": 100 * (55 - 50)}, {"matched": 2, "missing": 2}),
    "extra trade": (_paper(_EXTRA), _orders(_BACKTEST), {"extra_trades": -5 * (12 - 10)}, {"matched": 4, "extra": 2}),
    "partial fill": (_paper(_PARTIAL), _orders(_BACKTEST), {"quantity": 40 * (55 - 50)}, {"matched": 4}),
    "everything": (
        _paper([*_PARTIAL[:1], (1, "AAA", "buy", 40, 50.2), *_PARTIAL[2:3], (7, "AAA", "sell", 40, 56.0), (8, "DDD", "sell", 3, 9.0)], commission=0.5, worse_bps=3),
        _orders(_BACKTEST, fees=0.1),
        {},
        {"matched": 2, "missing": 2, "extra": 2},  # the day-7 sell is an order of its own, not the day-5 order's
    ),
}


@pytest.mark.parametrize("case", list(DRIFT_CASES))
def test_drift_causes_add_up_to_the_shortfall(case: str) -> None:
    paper, orders, expected, statuses = DRIFT_CASES[case]
    report = drift_report(paper, orders)
    s = report.summary
    # The identity: backtest P&L - paper P&L, split by cause (costs to the paper account are positive).
    assert s["shortfall"] == pytest.approx(s["backtest_pnl"] - s["paper_pnl"])
    assert sum(s[c] for c in CAUSES) == pytest.approx(s["shortfall"], abs=1e-9)
    assert s["residual"] == pytest.approx(0, abs=1e-9)
    if case != "everything":
        for cause in CAUSES:
            assert s[cause] == pytest.approx(expected.get(cause, 0.0), abs=1e-9), cause
    counts = dict(report.rows.group_by("status").len().iter_rows())
    assert counts == statuses
    assert report.rows.columns[:10] == ["symbol", "side", "ts", "fill_ts", "expected_qty", "filled_qty", "expected_price", "fill_price", "price_diff_bps", "qty_diff"]
    # Rows carry the causes too: their costs add up to the shortfall without commissions.
    costs = report.rows.group_by("status").agg(pl.col("slippage_cost", "quantity_cost").sum())
    by_status = {status: (slip, qty) for status, slip, qty in costs.iter_rows()}
    assert s["slippage"] == pytest.approx(sum(slip for slip, _qty in by_status.values()), abs=1e-9)
    assert s["missed_trades"] == pytest.approx(by_status.get("missing", (0, 0))[1], abs=1e-9)
    assert s["extra_trades"] == pytest.approx(by_status.get("extra", (0, 0))[1], abs=1e-9)
    assert all(isinstance(v, float) for v in s.values())
    text = report.markdown()
    assert "| slippage |" in text and "shortfall" in text


def test_drift_rows_for_worse_fills_and_a_missing_trade() -> None:
    report = drift_report(_paper(_WITHOUT_AAA, worse_bps=5), _orders(_BACKTEST))
    rows = {(r["symbol"], r["side"]): r for r in report.rows.iter_rows(named=True)}
    assert rows[("BBB", "buy")]["price_diff_bps"] == pytest.approx(5.0)
    assert rows[("BBB", "sell")]["price_diff_bps"] == pytest.approx(5.0)  # sold lower: also worse
    assert rows[("BBB", "buy")]["fill_ts"] == rows[("BBB", "buy")]["ts"]
    missing = rows[("AAA", "buy")]
    assert (missing["status"], missing["filled_qty"], missing["qty_diff"], missing["fill_price"]) == ("missing", 0, -100, None)
    assert report.summary["missed_trades"] == pytest.approx(500)


def test_drift_pairs_each_order_with_its_own_fills_only() -> None:
    """A later fill of another order on the same symbol is never taken as this order's (the GOOGL buy
    "matched" at 1,034 bps); an order's own partial fills on later bars are, as partial-fill cost."""
    orders = _orders([(1, "AAA", "buy", 100, 50.0), (4, "AAA", "sell", 100, 52.0)])
    other = _paper([(1, "AAA", "buy", 70, 50.0), (2, "AAA", "buy", 50, 60.0), (4, "AAA", "sell", 120, 52.0)])
    report = drift_report(other, orders)
    assert report.rows.select("side", "filled_qty", "status").rows() == [("buy", 70, "matched"), ("buy", 50, "extra"), ("sell", 120, "matched")]
    assert report.rows.filter(pl.col("status") == "matched")["price_diff_bps"].to_list() == [0.0, 0.0]
    own = fills_frame(
        [
            Fill(fill_id="a", client_order_id="o1", symbol="AAA", side=Side.BUY, quantity=70, price=50.0, ts=T0 + timedelta(days=1)),
            Fill(fill_id="b", client_order_id="o1", symbol="AAA", side=Side.BUY, quantity=30, price=51.0, ts=T0 + timedelta(days=2)),
            Fill(fill_id="c", client_order_id="o2", symbol="AAA", side=Side.SELL, quantity=100, price=52.0, ts=T0 + timedelta(days=4)),
        ]
    )
    report = drift_report(own, orders)
    assert report.rows.select("filled_qty", "status", "client_order_ids").rows() == [(100, "matched", "o1"), (100, "matched", "o2")]
    s = report.summary
    assert s["slippage"] == 0 and s["partial_fills"] == pytest.approx(30 * 1.0) and s["residual"] == pytest.approx(0, abs=1e-9)
    late = drift_report(own, orders, tolerance=timedelta(hours=1))
    assert late.rows.select("filled_qty", "status").rows() == [(70, "matched"), (30, "extra"), (100, "matched")]
    assert sum(late.summary[c] for c in CAUSES) == pytest.approx(late.summary["shortfall"])


def test_drift_values_open_positions_at_the_marks() -> None:
    orders = _orders([(1, "AAA", "buy", 100, 50.0)])
    report = drift_report(_paper([(1, "AAA", "buy", 60, 50.0)]), orders, marks={"AAA": 58.0})
    assert report.summary["backtest_pnl"] == pytest.approx(800) and report.summary["paper_pnl"] == pytest.approx(480)
    assert report.summary["quantity"] == pytest.approx(320) and report.summary["residual"] == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="match_on"):
        drift_report(_paper([]), orders, match_on=("side",))


def _bar_by_bar(bars: pl.DataFrame, p: Any, engine_orders: pl.DataFrame, broker: SimulatedBroker) -> None:
    """The driver of test_simulated_broker.py::test_brackets_match_the_backtest_engine_bar_for_bar."""
    engine_buys = {r["ts"]: r["size"] for r in engine_orders.filter(pl.col("side") == "buy").iter_rows(named=True)}
    signals = DONCHIAN_BREAKOUT.signals(bars, p).sort("ts").to_dicts()
    for t, row in enumerate(signals):
        broker.on_bar({"AAPL": row})
        held = 1 if broker.positions().get("AAPL", 0) > 0 else 0
        if t + 1 == len(signals):
            break
        nxt = next_direction(held, row["entry_long"], row["exit_long"], False, False)
        fill_ts = signals[t + 1]["ts"]
        if nxt == 1 and held == 0 and fill_ts in engine_buys:
            levels = {"stop": row["stop"], "target1": row["target1"], "target2": row["target2"]}
            broker.submit(OrderRequest(client_order_id=client_order_id("d", "AAPL", row["ts"], Side.BUY), symbol="AAPL", side=Side.BUY, quantity=engine_buys[fill_ts], **levels))
        elif nxt == 0 and held == 1:
            qty = broker.positions()["AAPL"]
            broker.submit(OrderRequest(client_order_id=client_order_id("d", "AAPL", row["ts"], Side.SELL), symbol="AAPL", side=Side.SELL, quantity=qty))


def test_drift_of_a_costly_paper_run_against_the_costless_backtest() -> None:
    bars = SyntheticSource(seed=5).fetch(["AAPL"], "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    p = DONCHIAN_BREAKOUT.params(entry_window=15, exit_window=8)
    engine = run_backtest(bars, DONCHIAN_BREAKOUT, p, BacktestConfig(init_cash=100_000))
    broker = SimulatedBroker(SimConfig(slippage_bps=5, commission_per_share=0.01), cash=100_000)
    _bar_by_bar(bars, p, engine.orders, broker)
    paper = fills_frame(broker.fills)
    report = drift_report(paper, engine.orders)
    s = report.summary
    assert s["slippage"] > 0 and s["commission"] > 0
    matched = report.rows.filter(pl.col("status") == "matched")
    assert matched.height >= 0.9 * engine.orders.height
    # Every paper fill is the engine's price slipped by 5 bps against the trade.
    assert s["slippage"] == pytest.approx(5e-4 * float((matched["expected_price"] * matched["filled_qty"]).sum()), rel=1e-9)
    assert s["commission"] == pytest.approx(0.01 * float(paper["quantity"].sum()))
    assert sum(s[c] for c in CAUSES) == pytest.approx(s["shortfall"], abs=1e-6)
    assert s["residual"] == pytest.approx(0, abs=1e-6)
    assert s["shortfall"] > 0  # costs only make paper worse here
    # Performance on the same run: the paper P&L marked at the last close is the equity curve's.
    marks = bars.select("ts", "symbol", "close")
    perf = performance(paper, marks, 100_000)
    assert perf["total_pnl"] == pytest.approx(broker.account().equity - 100_000)
    assert perf["commissions"] == pytest.approx(float(paper["commission"].sum()))
    assert perf["trade_count"] == round_trips(paper).height > 5
