"""The compiled order kernels (backtests/kernels.py) on hand-computed cases: the side a position
holds, the order a bar's signals make, an entry's signed amount (slippage, fees, reversals, the
free-cash cap) and a target 1's half exit. Each case is small enough to check by hand, and each
guards one rule the engine and the sweeps compile in (mutation testing, issue 18)."""

from __future__ import annotations

import math

import pytest

from backtests.kernels import entry_amount_nb, half_exit_nb, next_order_nb, side_of_nb


@pytest.mark.parametrize(("position", "side"), [(2.5, 1), (1e-9, 1), (-2.5, -1), (-1e-9, -1), (0.0, 0)])
def test_side_of_a_position(position: float, side: int) -> None:
    assert side_of_nb(position) == side


@pytest.mark.parametrize(
    ("held", "signals", "size", "expected"),
    [
        (0, (True, False, False, False), 0.25, (1, 0.25)),  # entry long: the signal's size
        (0, (False, False, True, False), 0.25, (-1, -0.25)),  # entry short: side x size
        (1, (False, False, True, False), 0.25, (-1, -0.25)),  # a reversal is one entry order
        (-1, (True, False, False, False), 0.25, (1, 0.25)),
        (1, (False, True, False, False), 0.25, (0, 0.0)),  # exit long: to flat, target 0
        (-1, (False, False, False, True), 0.25, (0, 0.0)),
        (1, (False, True, False, False), math.nan, (0, 0.0)),  # an exit needs no size
    ],
)
def test_next_order(held: int, signals: tuple[bool, bool, bool, bool], size: float, expected: tuple[int, float]) -> None:
    side, weight = next_order_nb(held, *signals, size)
    assert (side, weight) == expected
    assert math.copysign(1.0, weight) == math.copysign(1.0, expected[1])


@pytest.mark.parametrize(
    ("held", "signals", "size"),
    [
        (1, (True, False, False, False), 0.25),  # already long: nothing to do
        (-1, (False, False, True, False), 0.25),
        (0, (False, False, False, False), 0.25),
        (0, (True, False, False, False), math.nan),  # size not warmed up: no entry rather than a guess
        (0, (False, False, True, False), math.inf),
        (1, (False, False, True, False), math.nan),  # nor a reversal
    ],
)
def test_no_order(held: int, signals: tuple[bool, bool, bool, bool], size: float) -> None:
    side, weight = next_order_nb(held, *signals, size)
    assert side == held
    assert math.isnan(weight)


def test_entry_from_flat_pays_slippage_and_fees() -> None:
    # Long: fill 100 x 1.01 = 101, half of 10,000 over 101 x 1.001.
    assert entry_amount_nb(0.5, 0.0, 10_000.0, 100.0, 0.001, 0.01, False, math.inf) == pytest.approx(5_000 / (101 * 1.001), rel=1e-12)
    assert entry_amount_nb(0.5, 0.0, 10_000.0, 100.0, 0.001, 0.01, True, math.inf) == 49.0  # 49.45 whole: 49
    # Short: fill 100 x 0.99 = 99, a negative amount.
    assert entry_amount_nb(-0.5, 0.0, 10_000.0, 100.0, 0.001, 0.01, False, math.inf) == pytest.approx(-5_000 / (99 * 1.001), rel=1e-12)
    assert entry_amount_nb(-0.5, 0.0, 10_000.0, 100.0, 0.001, 0.01, True, math.inf) == -50.0  # 50.45


def test_a_reversal_closes_first_and_sizes_on_what_is_left() -> None:
    # Long 10 -> short half: the sell of 10 at 99 costs 10 x (100 - 99) of slippage and 10 x 99 x 0.001
    # of fees, so 9,989.01 is left; the amount also undoes the 10 held.
    left = 10_000 - 10 * 1.0 - 10 * 99 * 0.001
    expected = -left * 0.5 / (99 * 1.001) - 10
    assert entry_amount_nb(-0.5, 10.0, 10_000.0, 100.0, 0.001, 0.01, False, math.inf) == pytest.approx(expected, rel=1e-12)
    # Short 10 -> long: the buy of 10 at 101 costs 10 x 1 and 10 x 101 x 0.001.
    left = 10_000 - 10 * 1.0 - 10 * 101 * 0.001
    expected = left * 0.5 / (101 * 1.001) + 10
    assert entry_amount_nb(0.5, -10.0, 10_000.0, 100.0, 0.001, 0.01, False, math.inf) == pytest.approx(expected, rel=1e-12)


def test_adding_to_the_same_side_counts_the_position_held() -> None:
    # Already long 10 (no closing trade): the target is half the equity, less the 10 held.
    assert entry_amount_nb(0.5, 10.0, 10_000.0, 100.0, 0.0, 0.0, False, math.inf) == pytest.approx(50.0 - 10.0, rel=1e-12)


def test_free_cash_caps_an_entry() -> None:
    assert entry_amount_nb(0.5, 0.0, 10_000.0, 100.0, 0.0, 0.0, False, 1_000.0) == pytest.approx(10.0, rel=1e-12)
    assert entry_amount_nb(-0.5, 0.0, 10_000.0, 100.0, 0.0, 0.0, False, 1_000.0) == pytest.approx(-10.0, rel=1e-12)
    assert entry_amount_nb(0.5, 0.0, 10_000.0, 100.0, 0.0, 0.0, False, 0.0) == 0.0


@pytest.mark.parametrize(
    ("position", "side", "whole", "expected"),
    [
        (10.0, 1, True, -5.0),
        (11.0, 1, True, -5.0),  # whole shares: half rounded down
        (11.0, 1, False, -5.5),
        (-11.0, -1, True, 5.0),  # a short's half is bought back
        (-11.0, -1, False, 5.5),
        (10.0, -1, True, 0.0),  # a long under a short bracket: not its exit
        (-10.0, 1, False, 0.0),
    ],
)
def test_half_exit(position: float, side: int, whole: bool, expected: float) -> None:
    assert half_exit_nb(position, side, whole) == expected


@pytest.mark.parametrize(
    ("position", "side", "expected"),
    [
        (0.5, 1, -0.25),  # under one share, fractional: still a position on the bracket's side
        (-0.5, -1, 0.25),
        (-0.5, 1, 0.0),  # under one share against the bracket's side: not its exit
        (0.5, -1, 0.0),
        (0.0, 1, 0.0),  # flat: nothing to exit
    ],
)
def test_half_exit_of_less_than_one_share(position: float, side: int, expected: float) -> None:
    # The side test is `position x side <= 0`, at 0 exactly: a bound of 1 or -1 instead would take
    # a fractional position under one share for flat, or a small one against the side for its own.
    assert half_exit_nb(position, side, False) == expected


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("position", [5.0, -5.0, 0.5, 0.0])
def test_half_exit_on_no_side_is_nothing(position: float, whole: bool) -> None:
    # A side of 0 (flat: no bracket's side) takes nothing off, whatever is held ("0 otherwise"). The
    # side test multiplies: `position / side` instead raises ZeroDivisionError there. Every engine and
    # sweep caller passes side_of_nb of a non-zero position (1 or -1), where the two agree.
    assert half_exit_nb(position, 0, whole) == 0.0
