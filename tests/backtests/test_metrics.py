"""Each metric against a hand computation on a tiny equity curve."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, buy_and_hold, run_backtest, to_market
from backtests.metrics import compute_metrics, longest_underwater, periods_per_year
from strategies.base import SIGNAL_COLUMNS, Strategy, StrategyParams

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


def _two_symbols() -> pl.DataFrame:
    """AAA closes 100, 100, 110, 121, 110; BBB 50, 55, 50, 50, 60; every bar opens at the last close."""
    closes = {"AAA": [100.0, 100.0, 110.0, 121.0, 110.0], "BBB": [50.0, 55.0, 50.0, 50.0, 60.0]}
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    frames = []
    for symbol, close in closes.items():
        open_ = [close[0], *close[:-1]]
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "timeframe": "1d",
                    "ts": [start + timedelta(days=k) for k in range(5)],
                    "open": open_,
                    "high": [max(o, c) for o, c in zip(open_, close, strict=True)],
                    "low": [min(o, c) for o, c in zip(open_, close, strict=True)],
                    "close": close,
                    "volume": 1000.0,
                }
            )
        )
    return pl.concat(frames)


class _Params(StrategyParams):
    pass


def _aaa_for_two_bars(bars: pl.DataFrame, p: _Params) -> pl.DataFrame:
    """All in AAA on bar 0's signal (fills at bar 1's open, 100), out on bar 2's (bar 3's open, 110)."""
    i = pl.int_range(pl.len()).over("symbol")
    aaa = pl.col("symbol") == "AAA"
    return bars.with_columns(
        (aaa & (i == 0)).alias("entry_long"),
        (aaa & (i == 2)).alias("exit_long"),
        pl.lit(False).alias("entry_short"),
        pl.lit(False).alias("exit_short"),
        pl.lit(1.0).alias("size"),
        *(pl.lit(None, pl.Float64).alias(c) for c in ("stop", "target1", "target2")),
    ).select([*bars.columns, *SIGNAL_COLUMNS])


AAA_TWO_BARS = Strategy(name="aaa_two_bars", params_model=_Params, compute=_aaa_for_two_bars, lookback=lambda p: 1)


def test_exposure_turnover_and_benchmark_by_hand() -> None:
    bars = _two_symbols()
    result = run_backtest(bars, AAA_TWO_BARS, _Params(), BacktestConfig(init_cash=10_000))
    assert result.orders.select("symbol", "side", "size", "price").rows() == [("AAA", "buy", 100.0, 100.0), ("AAA", "sell", 100.0, 110.0)]
    equity = np.array([10_000.0, 10_000.0, 11_000.0, 11_000.0, 11_000.0])
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity)
    m = result.metrics
    # Held at the close of bars 1 and 2 only (sold at bar 3's open), in one of two symbols: 2 of 5 bars.
    assert m["exposure"] == pytest.approx(0.4)
    # Traded value 100 x 100 + 100 x 110 over mean equity 10,600.
    assert m["turnover"] == pytest.approx(21_000 / 10_600)
    # Equal-weight buy-and-hold from the first close: mean of (AAA, BBB) growth x 10,000.
    benchmark = np.array([10_000.0, 10_500.0, 10_500.0, 11_050.0, 11_500.0])
    np.testing.assert_allclose(buy_and_hold(to_market(AAA_TWO_BARS.signals(bars, _Params())), 10_000), benchmark)
    r = np.array([0.0, 0.1, 0.0, 0.0])
    b = np.array([0.05, 0.0, 550 / 10_500, 450 / 11_050])
    beta = np.cov(r, b, ddof=1)[0, 1] / b.var(ddof=1)
    assert m["beta"] == pytest.approx(beta)
    assert m["alpha"] == pytest.approx((r.mean() - beta * b.mean()) * 252)


def test_exposure_counts_short_positions() -> None:
    bars = _two_symbols()
    short = Strategy(
        name="aaa_short",
        params_model=_Params,
        compute=lambda b, p: _aaa_for_two_bars(b, p).with_columns(
            pl.col("entry_long").alias("entry_short"), pl.col("exit_long").alias("exit_short"), pl.lit(False).alias("entry_long"), pl.lit(False).alias("exit_long")
        ),
        lookback=lambda p: 1,
    )
    result = run_backtest(bars, short, _Params(), BacktestConfig(init_cash=10_000, allow_short=True))
    assert result.orders.select("side", "size").rows() == [("sell", 100.0), ("buy", 100.0)]
    assert result.metrics["exposure"] == pytest.approx(0.4)
    assert result.metrics["turnover"] == pytest.approx(21_000 / np.mean([10_000.0, 10_000.0, 9_000.0, 9_000.0, 9_000.0]))


@pytest.mark.parametrize(("timeframe", "bars"), [("1m", 252 * 390), ("5m", 252 * 78), ("15m", 252 * 26), ("1h", 252 * 7), ("1d", 252), ("1w", 252)])
def test_periods_per_year(timeframe: str, bars: int) -> None:
    assert periods_per_year(timeframe) == bars


def test_two_returns_and_two_points_by_hand() -> None:
    m = compute_metrics(np.array([100.0, 110.0, 99.0]))
    assert m["volatility"] == pytest.approx(math.sqrt(0.02) * math.sqrt(252))  # std of (0.1, -0.1), ddof 1
    assert m["sharpe"] == pytest.approx(0.0)
    two = compute_metrics(np.array([100.0, 110.0]))  # the fewest points there are metrics for
    assert two["total_return"] == pytest.approx(0.1) and two["cagr"] == pytest.approx(1.1**252 - 1)
    assert math.isnan(two["volatility"]) and math.isnan(two["sharpe"])


def test_an_account_wiped_out_has_cagr_minus_one() -> None:
    # A short squeezed past the account's equity ends below zero: everything lost, not a complex power.
    m = compute_metrics(np.array([100.0, 120.0, 90.0, 40.0, 10.0, -20.0]))
    assert m["cagr"] == -1.0 and m["total_return"] == pytest.approx(-1.2)


def test_a_break_even_trade_is_neither_a_win_nor_a_loss() -> None:
    m = compute_metrics(EQUITY, trades=np.array([0.5, 0.0, -0.25]))
    assert m["win_rate"] == pytest.approx(1 / 3)
    assert m["profit_factor"] == pytest.approx(2.0)
    assert m["expectancy"] == pytest.approx(0.25 / 3)


def test_never_under_water() -> None:
    assert longest_underwater(np.array([1.0, 2.0, 2.0, 3.0])) == 0
    assert compute_metrics(np.array([1.0, 2.0, 2.0, 3.0]))["max_drawdown"] == 0.0


def _longest_run_below_peak(equity: np.ndarray) -> int:
    """The rule in its plainest form, bar by bar (the reference for the vectorized count)."""
    peak, run, longest = -math.inf, 0, 0
    for value in equity:
        peak = max(peak, value) if not math.isnan(value) else peak
        run = run + 1 if value < peak else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("seed", range(5))
def test_longest_underwater_counts_the_longest_run_below_the_running_peak(seed: int) -> None:
    rng = np.random.default_rng(seed)
    equity = 100.0 + np.cumsum(rng.normal(0.0, 1.0, 2_000))
    assert longest_underwater(equity) == _longest_run_below_peak(equity)
    # Edges: never below, below to the last bar, one bar, a run of exactly one bar.
    assert longest_underwater(np.array([1.0, 2.0, 3.0])) == 0
    assert longest_underwater(np.array([3.0, 2.0, 1.0])) == 2
    assert longest_underwater(np.array([5.0])) == 0
    assert longest_underwater(np.array([1.0, 0.5, 1.0, 0.5, 0.4, 2.0])) == 2
