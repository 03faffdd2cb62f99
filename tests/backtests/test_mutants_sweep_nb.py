"""The compiled sweep loops (backtests/sweep_nb.py) on paths small enough to compute by hand: a
trade's cash with slippage and fees (capped by cash, whole shares, nothing filled), the mark and the
drawdown, a long and a short through the signal loop, and bracket exits (target 1's half, the
breakeven stop, a stop gapped through, one exit per bar, no bracket after a reversal). Written for the
survivors of mutation testing (issue 18): each case pins one rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.sweep_nb import _fill_nb, _mark_nb, _settle_nb, _trade_nb, bracket_sweep_nb, signals_sweep_nb

NAN = math.nan


def test_a_buy_pays_slippage_and_fees() -> None:
    cash, pos, filled = _trade_nb(10_000.0, 0.0, 10.0, 100.0, 0.001, 0.01, True)
    assert (pos, filled) == (10.0, 1)
    assert cash == pytest.approx(10_000 - 10 * 101 - 10 * 101 * 0.001, rel=1e-12)


def test_a_buy_is_capped_by_the_cash() -> None:
    cash, pos, filled = _trade_nb(500.0, 2.0, 10.0, 100.0, 0.001, 0.01, True)
    assert (pos, filled) == (2.0 + 4.0, 1)  # 500 / 1.001 / 101 = 4.95 -> 4 whole shares
    assert cash == pytest.approx(500 - 4 * 101 - 4 * 101 * 0.001, rel=1e-12)
    cash, pos, filled = _trade_nb(500.0, 0.0, 10.0, 100.0, 0.001, 0.01, False)
    assert pos == pytest.approx(500 / 1.001 / 101, rel=1e-12)
    assert cash == pytest.approx(0.0, abs=1e-9)


def test_a_buy_within_float_noise_of_the_cash_is_not_cut() -> None:
    cost = 10 * 101 * 1.001
    cash, pos, _ = _trade_nb(cost * (1 - 1e-11), 0.0, 10.0, 100.0, 0.001, 0.01, True)
    assert pos == 10.0  # capping would floor 9.99999999 shares to 9
    assert cash == pytest.approx(0.0, abs=1e-6)


def test_the_fee_counts_toward_the_cash_cap() -> None:
    """10 shares at 101 (slipped) cost 1,011.01 with the fee: a millionth less cash buys 9, not 10."""
    cost = 10 * 101 * 1.001
    cash, pos, filled = _trade_nb(cost * (1 - 1e-6), 0.0, 10.0, 100.0, 0.001, 0.01, True)
    assert (pos, filled) == (9.0, 1)
    assert cash == pytest.approx(cost * (1 - 1e-6) - 9 * 101 * 1.001, rel=1e-12)
    cash, pos, _ = _trade_nb(cost * (1 - 1e-6), 0.0, 10.0, 100.0, 0.001, 0.01, False)
    assert pos == pytest.approx(10 * (1 - 1e-6), rel=1e-12)
    assert cash == pytest.approx(0.0, abs=1e-9)


def test_a_buy_exactly_the_tolerance_over_the_cash_is_not_cut() -> None:
    """vectorbt's is_close is inclusive: a cost of 1e9 against cash 1e9 - 1 (1e-9 of it, REL_TOL) is close."""
    assert _trade_nb(999_999_999.0, 0.0, 1e7, 100.0, 0.0, 0.0, True) == (-1.0, 1e7, 1)


def test_a_sell_receives_the_slipped_price_less_fees() -> None:
    cash, pos, filled = _trade_nb(0.0, 10.0, -10.5, 100.0, 0.001, 0.01, True)  # whole shares: 10
    assert (pos, filled) == (0.0, 1)
    assert cash == pytest.approx(10 * 99 - 10 * 99 * 0.001, rel=1e-12)
    cash, pos, _ = _trade_nb(0.0, 0.0, -2.5, 100.0, 0.001, 0.01, False)  # a short sale, fractional
    assert pos == -2.5
    assert cash == pytest.approx(2.5 * 99 * 0.999, rel=1e-12)


def test_less_than_a_whole_share_trades_nothing() -> None:
    assert _trade_nb(1_000.0, 3.0, 0.5, 100.0, 0.0, 0.0, True) == (1_000.0, 3.0, 0)
    assert _trade_nb(1_000.0, 3.0, -0.5, 100.0, 0.0, 0.0, True) == (1_000.0, 3.0, 0)
    assert _trade_nb(50.0, 0.0, 2.0, 100.0, 0.0, 0.0, True) == (50.0, 0.0, 0)  # cash for half a share
    assert _trade_nb(1_000.0, 3.0, 0.0, 100.0, 0.0, 0.0, False) == (1_000.0, 3.0, 0)


def test_one_share_or_a_fraction_of_one_is_bought() -> None:
    assert _trade_nb(1_000.0, 0.0, 1.0, 100.0, 0.0, 0.0, True) == (900.0, 1.0, 1)
    assert _trade_nb(1_000.0, 0.0, 1.7, 100.0, 0.0, 0.0, True) == (900.0, 1.0, 1)  # whole shares: 1
    assert _trade_nb(1_000.0, 0.0, 0.5, 100.0, 0.0, 0.0, False) == (950.0, 0.5, 1)


def test_a_sell_of_less_than_one_fractional_share_sells_at_the_sell_side() -> None:
    """A position under one share (a costly stock, fractional shares) still exits, at the bid side."""
    cash, pos, filled = _trade_nb(10.0, 0.4, -0.4, 1_000.0, 0.001, 0.01, False)
    assert (pos, filled) == (0.0, 1)
    assert cash == pytest.approx(10 + 0.4 * 990 * 0.999, rel=1e-12)
    cash, pos, filled = _fill_nb(10.0, 0.4, 0.0, 1_000.0, 0.001, 0.01, False)  # the exit to flat
    assert (pos, filled) == (0.0, 1)


def test_fill_exits_to_flat_or_enters_on_the_portfolio_value() -> None:
    cash, pos, filled = _fill_nb(100.0, 10.0, 0.0, 50.0, 0.001, 0.002, True)
    assert (pos, filled) == (0.0, 1)
    assert cash == pytest.approx(100 + 10 * 49.9 * 0.999, rel=1e-12)
    cash, pos, _ = _fill_nb(1_400.0, -10.0, 0.0, 50.0, 0.0, 0.0, True)  # a short bought back
    assert (cash, pos) == (900.0, 0.0)
    # Long 10 at 50 with 500 cash: worth 1,000; half of it long again is 10 shares, none to trade.
    assert _fill_nb(500.0, 10.0, 0.5, 50.0, 0.0, 0.0, True) == (500.0, 10.0, 0)
    # Reversal: worth 1,000, a short of half: sell the 10 and 10 more.
    cash, pos, filled = _fill_nb(500.0, 10.0, -0.5, 50.0, 0.0, 0.0, True)
    assert (cash, pos, filled) == (1_500.0, -10.0, 1)


def test_the_mark_tracks_the_peak_and_the_deepest_drawdown() -> None:
    assert _mark_nb(1_000.0, 10.0, 50.0, 2_000.0, 0.1) == (1_500.0, 2_000.0, 0.25)
    assert _mark_nb(1_000.0, 10.0, 150.0, 2_000.0, 0.1) == (2_500.0, 2_500.0, 0.1)
    assert _mark_nb(1_000.0, -10.0, 20.0, 900.0, 0.3) == (800.0, 900.0, 0.3)  # a short's value is negative


def test_settle_fills_the_pending_order_then_marks() -> None:
    assert _settle_nb(1_000.0, 0.0, NAN, 10.0, 12.0, 0.0, 0.0, True, 1_000.0, 0.0) == (1_000.0, 0.0, 0, 1_000.0, 1_000.0, 0.0)
    cash, pos, filled, equity, peak, dd = _settle_nb(1_000.0, 0.0, 1.0, 10.0, 8.0, 0.0, 0.0, True, 1_200.0, 0.1)
    assert (cash, pos, filled, equity, peak) == (0.0, 100.0, 1, 800.0, 1_200.0)
    assert dd == pytest.approx(1 - 800 / 1_200, rel=1e-12)


def _signals(n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.zeros((n, k), dtype=np.bool_) for _ in range(4))  # type: ignore[return-value]


def test_signal_loop_long_and_short_by_hand() -> None:
    fill = np.array([100.0, 100.0, 110.0, 120.0, 130.0])
    close = np.array([100.0, 105.0, 95.0, 125.0, 130.0])
    el, xl, es, xs = _signals(5, 2)
    el[0, 0], xl[2, 0] = True, True  # long from bar 1's fill to bar 3's
    es[0, 1], xs[2, 1] = True, True  # the same as a short
    size = np.full((5, 2), 0.5)
    fee = np.array([0.0, 0.001, 0.0, 0.002, 0.0])
    final, max_dd, orders = signals_sweep_nb(fill, close, el, xl, es, xs, size, fee, 0.01, 10_000.0, False)
    assert list(orders) == [2, 2]
    # Long: half the cash at 101 with a 0.1 % fee; sold at 120 x 0.99 less 0.2 %.
    shares = 5_000 / (101 * 1.001)
    cash = 10_000 - shares * 101 * 1.001
    assert final[0] == pytest.approx(cash + shares * 118.8 * 0.998, rel=1e-12)
    equity = [10_000, cash + shares * 105, cash + shares * 95]
    assert max_dd[0] == pytest.approx(1 - equity[2] / equity[1], rel=1e-12)
    # Short: sold at 99 less fees, bought back at 121.2 plus 0.2 %.
    shares = 5_000 / (99 * 1.001)
    cash = 10_000 + shares * 99 * 0.999
    assert final[1] == pytest.approx(cash - shares * 121.2 * 1.002, rel=1e-12)
    peak = cash - shares * 95  # the short's best close
    assert max_dd[1] == pytest.approx(1 - (cash - shares * 121.2 * 1.002) / peak, rel=1e-12)


def test_signal_loop_whole_shares_and_a_reversal() -> None:
    fill = np.array([10.0, 10.0, 12.0, 12.0])
    close = np.array([10.0, 11.0, 12.0, 12.0])
    el, xl, es, xs = _signals(4, 1)
    el[0, 0], es[1, 0] = True, True  # long on bar 1, reversed to short on bar 2
    size = np.full((4, 1), 1.0)
    fee = np.zeros(4)
    final, max_dd, orders = signals_sweep_nb(fill, close, el, xl, es, xs, size, fee, 0.0, 1_005.0, True)
    # 100 shares at 10 (5 left); at 12 worth 1,205: sell 100 and 100 more short (floor(1,205 / 12)).
    assert orders[0] == 2
    assert final[0] == pytest.approx(5 + 100 * 12 + 100 * 12 - 100 * 12, rel=1e-12)
    assert max_dd[0] == 0.0


def test_no_bars_no_orders_and_no_drawdown() -> None:
    """A window without bars: every combination ends at the initial cash, drawdown 0 (not below)."""
    el, xl, es, xs = _signals(0, 2)
    empty, levels = np.empty(0), np.full((0, 2), NAN)
    final, max_dd, orders = signals_sweep_nb(empty, empty, el, xl, es, xs, np.full((0, 2), 0.5), empty, 0.0, 1_000.0, True)
    assert (list(final), list(max_dd), list(orders)) == ([1_000.0, 1_000.0], [0.0, 0.0], [0, 0])
    final, max_dd, orders = bracket_sweep_nb(
        empty, empty, empty, empty, empty, el, xl, es, xs, np.full((0, 2), 0.5), levels, levels, levels, empty, 0.0, 0.0, 0.0, 1_000.0, True
    )
    assert (list(final), list(max_dd), list(orders)) == ([1_000.0, 1_000.0], [0.0, 0.0], [0, 0])


def test_an_order_decided_on_the_bar_before_the_last_fills_on_the_last() -> None:
    fill = np.array([100.0, 100.0, 100.0, 120.0])
    close = np.array([100.0, 100.0, 100.0, 125.0])
    el, xl, es, xs = _signals(4, 1)
    el[1, 0] = True  # decided on bar 1, filled on bar 2; the exit decided on bar 2 fills on bar 3
    xl[2, 0] = True
    final, _, orders = signals_sweep_nb(fill, close, el, xl, es, xs, np.full((4, 1), 0.5), np.zeros(4), 0.0, 10_000.0, True)
    assert (float(final[0]), int(orders[0])) == (5_000 + 50 * 120, 2)
    rows = [(100.0, 100.0, 100.0, 100.0)] * 3 + [(120.0, 125.0, 119.0, 125.0)]
    assert _bracket_run(rows, {"el": [1], "xl": [2]}, {}) == (5_000 + 50 * 120, 0.0, 2)


def _bars(rows: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, ...]:
    o, h, lo, c = (np.array(col) for col in zip(*rows, strict=True))
    return o, h, lo, c


def _bracket_run(rows: list[tuple[float, float, float, float]], signals: dict[str, list[int]], levels: dict[int, tuple[float, float, float]],
                 fee: float = 0.0, fee_bps: float = 0.0, fee_per_share: float = 0.0, slip: float = 0.0, size: float = 0.5,
                 whole: bool = True) -> tuple[float, float, int]:  # fmt: skip
    o, h, lo, c = _bars(rows)
    n = len(rows)
    el, xl, es, xs = _signals(n, 1)
    for name, arr in zip(("el", "xl", "es", "xs"), (el, xl, es, xs), strict=True):
        for t in signals.get(name, []):
            arr[t, 0] = True
    stop, t1, t2 = (np.full((n, 1), NAN) for _ in range(3))
    for t, (s, a, b) in levels.items():
        stop[t, 0], t1[t, 0], t2[t, 0] = s, a, b
    final, dd, orders = bracket_sweep_nb(
        o, o, h, lo, c, el, xl, es, xs, np.full((n, 1), size), stop, t1, t2, np.full(n, fee), fee_bps, fee_per_share, slip, 10_000.0, whole
    )
    return float(final[0]), float(dd[0]), int(orders[0])


LONG_PATH = [  # open, high, low, close
    (100.0, 101.0, 99.0, 100.0),
    (100.0, 111.0, 99.0, 105.0),  # the entry fills; its own bar reaches target 1: not acted on
    (106.0, 112.0, 104.0, 108.0),  # target 1: half out at 110
    (103.0, 125.0, 99.0, 101.0),  # breakeven stop at 100 (and target 2 on the same bar: one exit only)
    (101.0, 101.0, 101.0, 101.0),
]


def test_bracket_exits_pay_slippage_and_both_fees() -> None:
    final, _, orders = _bracket_run(LONG_PATH, {"el": [0]}, {0: (90.0, 110.0, 120.0)}, fee=0.001, fee_bps=0.001, fee_per_share=0.05, slip=0.002)
    assert orders == 3
    shares = math.floor(5_000 / (100.2 * 1.001))  # 49
    cash = 10_000 - shares * 100.2 * 1.001
    half = shares // 2  # 24
    cash += half * 109.78 * (1 - (0.001 + 0.05 / 110))
    cash += (shares - half) * 99.8 * (1 - (0.001 + 0.05 / 100))
    assert final == pytest.approx(cash, rel=1e-12)


def test_bracket_long_half_at_target1_then_breakeven_stop() -> None:
    final, dd, orders = _bracket_run(LONG_PATH, {"el": [0]}, {0: (90.0, 110.0, 120.0)})
    assert orders == 3
    assert final == 5_000 + 25 * 110 + 25 * 100  # 50 shares at 100
    assert dd == pytest.approx(1 - 10_250 / (7_750 + 25 * 108), rel=1e-12)


def test_bracket_long_stop_gapped_through_fills_at_the_open() -> None:
    rows = [(100.0, 101.0, 99.0, 100.0), (100.0, 101.0, 99.0, 100.0), (85.0, 112.0, 80.0, 90.0), (90.0, 90.0, 90.0, 90.0)]
    final, _, orders = _bracket_run(rows, {"el": [0]}, {0: (90.0, 110.0, 120.0)})
    assert orders == 2
    assert final == 5_000 + 50 * 85


def test_bracket_long_target2_after_target1() -> None:
    rows = [*LONG_PATH[:3], (115.0, 121.0, 114.0, 118.0), (118.0, 118.0, 118.0, 118.0)]
    final, _, orders = _bracket_run(rows, {"el": [0]}, {0: (90.0, 110.0, 120.0)})
    assert orders == 3
    assert final == 5_000 + 25 * 110 + 25 * 120


SHORT_PATH = [
    (100.0, 101.0, 99.0, 100.0),
    (100.0, 101.0, 89.0, 95.0),  # the entry fills; its own bar reaches target 1: not acted on
    (94.0, 96.0, 88.0, 92.0),  # target 1 (90): half bought back at 90
    (97.0, 101.0, 75.0, 99.0),  # breakeven stop at 100, before target 2 (80)
    (99.0, 99.0, 99.0, 99.0),
]


def test_bracket_short_mirror() -> None:
    final, dd, orders = _bracket_run(SHORT_PATH, {"es": [0]}, {0: (110.0, 90.0, 80.0)})
    assert orders == 3
    assert final == 10_000 + 50 * 100 - 25 * 90 - 25 * 100
    assert dd == pytest.approx(1 - 10_250 / (12_750 - 25 * 92), rel=1e-12)


def test_no_bracket_after_a_reversal() -> None:
    # Short from flat on bar 1 (no levels), reversed long on bar 2 with levels: a reversal is not an
    # entry from flat, so no bracket: bar 3 reaches the long's target 1 and the short's entry price.
    rows = [(100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 100.0, 100.0), (102.0, 102.0, 102.0, 102.0), (102.0, 106.0, 99.0, 104.0),
            (104.0, 104.0, 104.0, 104.0)]  # fmt: skip
    final, _, orders = _bracket_run(rows, {"es": [0], "el": [1]}, {1: (95.0, 105.0, 110.0)}, size=1.0)
    assert orders == 2
    # Short 100 at 100; at 102 worth 9,800: buy the 100 back and 96 more (floor(9,800 / 102)).
    assert final == pytest.approx(10_000 + 100 * 100 - 100 * 102 - 96 * 102 + 96 * 104, rel=1e-12)


def test_a_signal_fill_takes_the_bar_no_bracket_exit_on_it() -> None:
    # Long with levels; an exit signal fills on bar 3 whose range also hits the stop: only the exit fills.
    rows = [(100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 100.0, 100.0), (95.0, 96.0, 80.0, 90.0),
            (90.0, 90.0, 90.0, 90.0)]  # fmt: skip
    final, _, orders = _bracket_run(rows, {"el": [0], "xl": [2]}, {0: (90.0, 110.0, 120.0)})
    assert orders == 2
    assert final == 5_000 + 50 * 95


@pytest.mark.parametrize(("side", "levels", "stop_bar", "exit_price"), [
    ("el", (3_600.0, 4_400.0, 4_800.0), (3_700.0, 3_800.0, 3_500.0, 3_550.0), 3_600.0),
    ("es", (4_400.0, 3_600.0, 3_200.0), (4_300.0, 4_500.0, 4_200.0, 4_450.0), 4_400.0),
], ids=["long", "short"])  # fmt: skip
def test_a_one_share_position_gets_its_bracket(
    side: str, levels: tuple[float, float, float], stop_bar: tuple[float, float, float, float], exit_price: float
) -> None:
    """Half of 10,000 buys (or shorts) one share at 4,000: a position of exactly one share, whose
    entry weight times shares is 0.5, still carries its stop."""
    rows = [(4_000.0, 4_000.0, 4_000.0, 4_000.0)] * 2 + [stop_bar, (stop_bar[3],) * 4]
    final, _, orders = _bracket_run(rows, {side: [0]}, {0: levels})
    assert orders == 2
    sign = 1 if side == "el" else -1
    assert final == 10_000 + sign * (exit_price - 4_000)


def test_a_reversal_drops_the_bracket_of_the_entry_it_reverses() -> None:
    """Long from flat with levels, reversed short on the next bar: the short carries no bracket, so
    the long's stop (90, below a short's price) does not cover it on bar 3."""
    rows = [(100.0, 100.0, 100.0, 100.0)] * 3 + [(100.0, 101.0, 99.0, 100.0), (95.0, 95.0, 95.0, 95.0)]
    final, _, orders = _bracket_run(rows, {"el": [0], "es": [1]}, {0: (90.0, 110.0, 120.0)})
    assert orders == 2
    # 50 shares at 100; at 100 worth 10,000: sell the 50 and 50 more short; at 95 the short gained 250.
    assert final == 10_000 + 50 * 100 - 50 * 95
