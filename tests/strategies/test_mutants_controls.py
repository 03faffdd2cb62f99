"""Exact boundaries of the shared controls (strategies/controls.py), computed by hand.

Fast plain-Python checks that kill mutants of each rule before the slow live/backtest swaps run:
equality at the limit trips, NaN and -0.0 hold nothing, a non-positive reference never trips.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from strategies import controls


@pytest.mark.parametrize(
    ("held", "side", "expected"),
    [
        (10.0, -1.0, True),  # long, selling: reduces
        (-10.0, 1.0, True),  # short, buying: reduces
        (10.0, 1.0, False),  # adds
        (-10.0, -1.0, False),
        (0.0, -1.0, False),  # flat: a sell opens a short
        (-0.0, 1.0, False),
        (0.0, 1.0, False),
        (math.nan, -1.0, False),  # unknown holds nothing
        (1e-300, -1e-300, False),  # the product underflows to -0.0: the rule reads its sign, not < 0 in exact math
    ],
)
def test_reduces(held: float, side: float, expected: bool) -> None:
    assert controls.reduces(held, side) is expected


@pytest.mark.parametrize("rule", [controls.daily_loss_hit, controls.drawdown_hit])
def test_breaker_boundaries(rule: Callable[[float, float, float], bool]) -> None:
    # limit 10 % of 100: trips at 90 exactly, not at 90.0001
    assert rule(90.0, 100.0, 0.1) is True
    assert rule(89.0, 100.0, 0.1) is True
    assert rule(90.5, 100.0, 0.1) is False
    assert rule(100.0, 100.0, 0.0) is True  # a zero limit trips at the reference itself
    assert rule(100.5, 100.0, 0.0) is False
    # A reference that is not positive cannot trip, whatever the mark.
    assert rule(-50.0, 0.0, 0.1) is False
    assert rule(-50.0, -0.0, 0.1) is False
    assert rule(-500.0, -100.0, 0.1) is False
    assert rule(-500.0, math.nan, 0.1) is False
    # A tiny positive reference still trips.
    assert rule(0.0, 1e-9, 0.5) is True
    # NaN mark never trips.
    assert rule(math.nan, 100.0, 0.1) is False
    # The limit is a fraction, not subtracted: 100 * (1 - 0.25) = 75.
    assert rule(75.0, 100.0, 0.25) is True
    assert rule(75.5, 100.0, 0.25) is False


def test_may_send_reducing_ignores_blocks_and_count() -> None:
    assert controls.may_send(True, False, True, 99, 0) is True
    assert controls.may_send(True, True, False, 0, 10) is False  # the flatten closes the book


@pytest.mark.parametrize(
    ("closing", "blocked", "trades", "max_trades", "expected"),
    [
        (False, False, 2, 3, True),
        (False, False, 3, 3, False),  # equality: spent
        (False, False, 4, 3, False),
        (False, True, 0, 3, False),  # blocked
        (True, False, 0, 3, True),  # closing does not gate an entry here: the window's block does
        (False, False, 0, 0, False),
        (False, False, -1, 0, True),
    ],
)
def test_may_send_entry(closing: bool, blocked: bool, trades: int, max_trades: int, expected: bool) -> None:
    assert controls.may_send(False, closing, blocked, trades, max_trades) is expected


@pytest.mark.parametrize(("trades", "max_trades", "expected"), [(2, 3, False), (3, 3, True), (4, 3, True), (0, 0, True), (0, 1, False)])
def test_trades_spent(trades: int, max_trades: int, expected: bool) -> None:
    assert controls.trades_spent(trades, max_trades) is expected


def test_trades_spent_reads_may_send_through_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controls, "may_send", lambda *a: False)
    assert controls.trades_spent(0, 10) is True
