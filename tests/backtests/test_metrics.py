"""Each metric against a hand computation on a tiny equity curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtests.metrics import compute_metrics, longest_underwater, periods_per_year

EQUITY = np.array([100.0, 110.0, 99.0, 108.9, 120.0, 96.0, 105.6])
BENCH = np.array([100.0, 105.0, 100.0, 103.0, 110.0, 100.0, 104.0])


def test_return_and_risk_metrics_by_hand() -> None:
    m = compute_metrics(EQUITY, "1d", benchmark=BENCH)
    r = np.array([0.1, -0.1, 0.1, 120 / 108.9 - 1, -0.2, 0.1])
    assert m["total_return"] == pytest.approx(0.056)
    assert m["cagr"] == pytest.approx(1.056 ** (252 / 6) - 1)
    assert m["volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(252))
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt(((np.minimum(r, 0)) ** 2).mean()) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(0.2)  # 120 -> 96
    assert m["max_drawdown_bars"] == 2  # 96 and 105.6 are under the 120 peak
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.2)
    q = np.quantile(r, 0.05)
    assert m["var_95"] == pytest.approx(-q) and m["cvar_95"] == pytest.approx(-r[r <= q].mean())
    b = np.diff(BENCH) / BENCH[:-1]
    beta = np.cov(r, b, ddof=1)[0, 1] / b.var(ddof=1)
    assert m["beta"] == pytest.approx(beta)
    assert m["alpha"] == pytest.approx((r.mean() - beta * b.mean()) * 252)


def test_trade_metrics_by_hand() -> None:
    m = compute_metrics(EQUITY, trades=np.array([50.0, -20.0, 30.0, -10.0]))
    assert m["trade_count"] == 4
    assert m["win_rate"] == 0.5
    assert m["profit_factor"] == pytest.approx(80 / 30)
    assert m["expectancy"] == pytest.approx(12.5)


def test_intraday_annualization_and_edge_cases() -> None:
    assert periods_per_year("1m") == 252 * 390 and periods_per_year("1h") == 252 * 7
    assert longest_underwater(np.array([1.0, 2.0, 1.5, 1.8, 2.0, 2.5])) == 2
    flat = compute_metrics(np.array([100.0, 100.0, 100.0]))
    assert math.isnan(flat["sharpe"]) and flat["max_drawdown"] == 0.0 and math.isnan(flat["win_rate"])
    with pytest.raises(ValueError, match="at least two"):
        compute_metrics(np.array([100.0]))
