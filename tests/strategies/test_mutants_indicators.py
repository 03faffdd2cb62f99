"""Indicators and sizing against hand-computed values, at their exact edges (issue 18: a window one
bar too long, a changed smoothing or a changed bound must fail a test, not pass by accident)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from strategies import indicators as ind
from strategies.sizing import SizingParams, size_expr

# true range 2, 4, 1, 2.5 (see test_window_exact.test_atr_sma_by_hand); ATR by simple mean of 2: -, 3, 2.5, 1.75
BARS = pl.DataFrame({"high": [11.0, 14.0, 13.0, 15.0], "low": [9.0, 11.0, 12.0, 13.0], "close": [10.0, 13.0, 12.5, 14.0]})


def _col(frame: pl.DataFrame, expr: pl.Expr) -> list[float | None]:
    return frame.with_columns(expr.alias("_value"))["_value"].to_list()  # a literal broadcast to every row


def test_ema_is_the_recursive_mean_with_alpha_two_over_span_plus_one() -> None:
    # span 3: alpha 0.5; y0 = 2, y1 = (4 + 2) / 2, y2 = (8 + 3) / 2, y3 = (4 + 5.5) / 2
    assert _col(pl.DataFrame({"close": [2.0, 4.0, 8.0, 4.0]}), ind.ema(3)) == [2.0, 3.0, 5.5, 4.75]


def test_wilder_rsi_by_hand() -> None:
    # changes +1, -1, +2, 0; gains (Wilder, alpha 1/2, from the first change) 1, .5, 1.25, .625;
    # losses 0, .5, .25, .125; nothing before two changes.
    got = _col(pl.DataFrame({"close": [10.0, 11.0, 10.0, 12.0, 12.0]}), ind.rsi(2))
    assert got == [None, None, 50.0, pytest.approx(100.0 - 100.0 / 6.0), pytest.approx(100.0 - 100.0 / 6.0)]
    # no loss at all: 100, not a division by zero
    assert _col(pl.DataFrame({"close": [10.0, 11.0, 12.0, 13.0]}), ind.rsi(2)) == [None, None, 100.0, 100.0]


def test_wilder_atr_by_hand() -> None:
    # true range 2, 4, 1, 2.5 smoothed with alpha 1/2: 2, 3, 2, 2.25; nothing before two ranges.
    assert _col(BARS, ind.atr(2)) == [None, 3.0, 2.0, 2.25]


def test_returns_by_hand() -> None:
    bars = pl.DataFrame({"close": [1.0, 2.0, 3.0]})
    assert _col(bars, ind.simple_return()) == [None, 1.0, 0.5]
    assert _col(bars, ind.log_return()) == [None, math.log(2.0), math.log(1.5)]


def test_window_std_by_hand_with_either_ddof() -> None:
    x = pl.DataFrame({"x": [1.0, 3.0, 7.0]})
    assert _col(x, ind.window_std(pl.col("x"), 2, ddof=0)) == [None, 1.0, 2.0]
    assert _col(x, ind.window_std(pl.col("x"), 2)) == [None, math.sqrt(2.0), math.sqrt(8.0)]
    # one value has no sample deviation: all null, not zero
    assert _col(x, ind.window_std(pl.col("x"), 1)) == [None, None, None]


def test_a_window_of_one_is_the_value_itself_and_zero_is_refused() -> None:
    bars = pl.DataFrame({"close": [1.0, 2.0, 4.0]})
    assert _col(bars, ind.sma(1)) == [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="window must be at least 1, got 0"):
        ind.sma(0)


def test_a_window_with_a_null_is_null_until_the_null_leaves_it() -> None:
    bars = pl.DataFrame({"close": [1.0, None, 3.0, 5.0, 7.0]})
    assert _col(bars, ind.sma(2)) == [None, None, None, 4.0, 6.0]


@pytest.mark.parametrize("window", [1, 2, 255, 256, 257, 300])
def test_window_sums_across_blocks_are_exact(window: int) -> None:
    # Whole numbers: every sum is exact, so any wrong bar in any block (256 outputs each) shows.
    n = 700
    x = np.arange(n, dtype=np.float64) * 3.0 + (np.arange(n) % 7)
    sums = ind.window_sums_nb(x, window)
    expected = np.array([x[t - window + 1 : t + 1].sum() for t in range(window - 1, n)])
    assert np.isnan(sums[: window - 1]).all()
    np.testing.assert_array_equal(sums[window - 1 :], expected)
    stds = ind.window_stds_nb(x, window, 1) if window > 1 else None
    if stds is not None:
        ref = np.array([x[t - window + 1 : t + 1].std(ddof=1) for t in range(window - 1, n)])
        assert np.isnan(stds[: window - 1]).all()
        np.testing.assert_allclose(stds[window - 1 :], ref, rtol=1e-12)


# --- sizing ----------------------------------------------------------------------------------------


def _size(**params: object) -> list[float | None]:
    p = SizingParams(atr_period=2, **params)  # type: ignore[arg-type]
    return _col(BARS, size_expr(p))


def test_fixed_fraction_is_the_fraction() -> None:
    assert _size(fraction=0.4) == [0.4] * 4


def test_volatility_sizing_by_hand() -> None:
    # vol_target / (ATR / close): 0.01 * 13 / 3, 0.01 * 12.5 / 2.5, 0.01 * 14 / 1.75 = 0.08 capped at 0.06
    got = _size(sizing="volatility", vol_target=0.01, fraction=0.06)
    assert got[0] is None
    assert got[1:] == [pytest.approx(0.13 / 3.0, rel=1e-12), pytest.approx(0.05, rel=1e-12), 0.06]


def test_risk_sizing_by_hand() -> None:
    # risk_per_trade / (stop_atr * ATR / close): 0.01 * 13 / 6, 0.01 * 12.5 / 5, 0.01 * 14 / 3.5 = 0.04 capped at 0.03
    got = _size(sizing="risk", risk_per_trade=0.01, risk_stop_atr=2.0, fraction=0.03)
    assert got[0] is None
    assert got[1:] == [pytest.approx(0.13 / 6.0, rel=1e-12), pytest.approx(0.025, rel=1e-12), 0.03]


def test_sizing_defaults_are_the_documented_ones() -> None:
    p = SizingParams()
    assert (p.sizing, p.fraction, p.vol_target, p.risk_per_trade, p.risk_stop_atr, p.atr_period) == ("fixed_fraction", 1.0, 0.01, 0.01, 2.0, 14)


@pytest.mark.parametrize(
    ("field", "lowest_bad", "lowest_ok", "highest_ok", "highest_bad"),
    [
        ("fraction", 0.0, 1e-9, 1.0, 1.0 + 1e-9),
        ("vol_target", 0.0, 1e-9, 1.0, 1.0 + 1e-9),
        ("risk_per_trade", 0.0, 1e-9, 1.0, 1.0 + 1e-9),
        ("risk_stop_atr", 0.0, 1e-9, 20.0, 20.0 + 1e-9),
        ("atr_period", 0, 1, 500, 501),
    ],
)
def test_sizing_bounds_are_exact(field: str, lowest_bad: float, lowest_ok: float, highest_ok: float, highest_bad: float) -> None:
    for ok in (lowest_ok, highest_ok):
        assert getattr(SizingParams(**{field: ok}), field) == ok
    for bad in (lowest_bad, highest_bad):
        with pytest.raises(ValidationError, match=field):
            SizingParams(**{field: bad})


def test_the_default_windows_are_the_documented_ones() -> None:
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, 60)))
    bars = pl.DataFrame({"close": close, "high": close * 1.01, "low": close * 0.99})
    pairs = [
        (ind.rsi(), ind.rsi(14)), (ind.rsi_sma(), ind.rsi_sma(14)), (ind.atr(), ind.atr(14)),
        (ind.atr_sma(), ind.atr_sma(14)), (ind.rolling_volatility(), ind.rolling_volatility(20)),
    ]  # fmt: skip
    for default, explicit in pairs:
        got, want = _col(bars, default), _col(bars, explicit)
        assert got == want and got[-1] is not None
    # and each is told apart from its neighbours (so the comparison above means something)
    assert _col(bars, ind.rolling_volatility(21))[-1] != _col(bars, ind.rolling_volatility(20))[-1]
    assert _col(bars, ind.rsi_sma(15))[-1] != _col(bars, ind.rsi_sma(14))[-1]


def test_rsi_by_hand_where_the_mean_loss_is_exactly_one_and_where_nothing_moved() -> None:
    # changes -1 -1 +1 +2 0 0 -1 +2. Simple means of 2: gains 0 .5 1.5 1 0 0 1, losses 1 .5 0 0 0 .5 .5:
    # RSI 0 (a mean loss of exactly 1, no gain), 50, 100 (no loss), 100, 100 (no move at all: not 0 / 0),
    # 0, 100 - 100 / 3.
    bars = pl.DataFrame({"close": [10.0, 9.0, 8.0, 9.0, 11.0, 11.0, 11.0, 10.0, 12.0]})
    got = _col(bars, ind.rsi_sma(2))
    assert got[:8] == [None, None, 0.0, 50.0, 100.0, 100.0, 100.0, 0.0] and got[8] == pytest.approx(200.0 / 3.0, rel=1e-12)
    # Wilder (alpha 1/2 from the first change): gains 0 0 .5 1.25 .625 .3125 .15625 1.078125,
    # losses 1 1 .5 .25 .125 .0625 .53125 .265625
    gains, losses = [0.5, 1.25, 0.625, 0.3125, 0.15625, 1.078125], [0.5, 0.25, 0.125, 0.0625, 0.53125, 0.265625]
    got = _col(bars, ind.rsi(2))
    assert got[:3] == [None, None, 0.0]
    assert got[3:] == [pytest.approx(100.0 - 100.0 / (1.0 + g / lo), rel=1e-12) for g, lo in zip(gains, losses, strict=True)]


@pytest.mark.parametrize("sizing", ["volatility", "risk", "fixed_fraction"])
def test_size_per_symbol_sizes_each_symbol_from_its_own_bars(sizing: str) -> None:
    """Two symbols in one frame get the sizes each gets alone: the ATR behind a volatility or risk size
    never reads the other symbol's bars (its first bars are null, not sized from the other's last)."""
    from strategies.sizing import size_per_symbol

    rng = np.random.default_rng(7)
    frames = []
    for symbol, level in (("AAA", 50.0), ("BBB", 400.0)):
        close = level * np.exp(np.cumsum(rng.normal(0, 0.01, 40)))
        frames.append(pl.DataFrame({"symbol": [symbol] * 40, "ts": list(range(40)), "open": close, "high": close * 1.01, "low": close * 0.99, "close": close}))
    both = pl.concat(frames)
    p = SizingParams(sizing=sizing, fraction=0.5, atr_period=5)  # type: ignore[arg-type]
    together = both.with_columns(size_per_symbol(p).alias("size"))
    for frame in frames:
        alone = frame.with_columns(size_expr(p).alias("size"))["size"]
        mine = together.filter(pl.col("symbol") == frame["symbol"][0])["size"]
        assert mine.to_list() == alone.to_list()
    if sizing != "fixed_fraction":
        assert together.filter(pl.col("symbol") == "BBB")["size"].head(4).null_count() == 4  # warming up, its own ATR
