"""The bracket rule's codes as the compiled loops read them (strategies/brackets.py; issue 18).

`backtests/order_sim.py`, `sweep_nb.py` and `sweep_channel_nb.py` start a bracket with the literal
phase 1, reset it to 0, test `phase > 0` and read `action == 1` as a half exit and any other
positive action as a full one: the named codes must be exactly those numbers."""

from __future__ import annotations

import math

from strategies.brackets import bracket_step, half_of


def test_the_codes_are_the_numbers_the_compiled_loops_use() -> None:
    # (phase, action, price) for a long from 100 with stop 95, targets 105 and 110
    assert bracket_step(1, 100.0, 95.0, 105.0, 110.0, 100.0, 101.0, 99.0)[:2] == (1, 0)  # full, no exit
    assert bracket_step(1, 100.0, 95.0, 105.0, 110.0, 100.0, 106.0, 99.0) == (2, 1, 105.0)  # half left, half exit
    assert bracket_step(1, 100.0, 95.0, 105.0, 110.0, 100.0, 101.0, 94.0) == (0, 2, 95.0)  # flat, exit all
    assert bracket_step(2, 100.0, 95.0, 105.0, 110.0, 101.0, 110.0, 100.5) == (0, 2, 110.0)
    assert bracket_step(2, 100.0, 95.0, 105.0, 110.0, 101.0, 102.0, 100.5)[:2] == (2, 0)


def test_without_target1_target2_exits_everything_in_phase_one_on_both_sides() -> None:
    assert bracket_step(1, 100.0, 95.0, math.nan, 110.0, 100.0, 110.0, 99.0) == (0, 2, 110.0)
    assert bracket_step(1, 100.0, 105.0, math.nan, 90.0, 100.0, 101.0, 90.0, side=-1) == (0, 2, 90.0)
    assert bracket_step(1, 100.0, 105.0, math.nan, 90.0, 100.0, 101.0, 90.5, side=-1)[:2] == (1, 0)


def test_half_of_rounds_down_to_whole_shares_only_when_not_fractional() -> None:
    assert half_of(9.0, fractional=False) == 4.0 and half_of(9.0, fractional=True) == 4.5
    assert half_of(1.0, fractional=False) == 0.0
