"""Metric edges the by-hand tests left open (mutation survivors in backtests/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.metrics import compute_metrics, longest_underwater


def test_cagr_of_an_account_ending_below_one_unit_is_still_its_growth_rate() -> None:
    # 252 daily returns from 1.0 to 0.5: exactly one year, so the CAGR is the total return.
    m = compute_metrics(np.linspace(1.0, 0.5, 253))
    assert m["cagr"] == pytest.approx(-0.5) and m["total_return"] == pytest.approx(-0.5)


def test_an_account_ending_just_below_zero_has_cagr_minus_one() -> None:
    # Not a fractional power of a negative number (NaN; five returns: the power 252 / 5 is no
    # integer): everything was lost.
    assert compute_metrics(np.array([100.0, 80.0, 60.0, 40.0, 20.0, -0.5]))["cagr"] == -1.0


def test_break_even_trades_without_losses_have_no_profit_factor() -> None:
    m = compute_metrics(np.array([100.0, 101.0]), trades=np.array([1.0, 0.0]))
    assert math.isnan(m["profit_factor"]) and m["win_rate"] == 0.5


def test_timeframe_by_keyword_and_the_rest_by_keyword_only() -> None:
    m = compute_metrics(np.array([100.0, 110.0]), timeframe="1h")
    assert m["cagr"] == pytest.approx(1.1 ** (252 * 7) - 1)
    with pytest.raises(TypeError):
        compute_metrics(np.array([100.0, 110.0]), "1d", np.array([1.0, 2.0]))  # type: ignore[misc]


def test_an_empty_history_is_never_under_water() -> None:
    assert longest_underwater(np.array([])) == 0
