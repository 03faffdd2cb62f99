"""Causal indicator expressions on a bar frame (one symbol, sorted by ts, or grouped with `.over`).

Each function returns a polars expression whose value at row t uses rows <= t only: rolling
windows, exponential means with `adjust=False`, shifts by +1. Nothing here looks forward.

Windowed means and standard deviations are exact functions of the window: each window is summed
from its oldest bar by `window_sums_nb`, so the value at row t is the same bytes whether the
history starts at t - window + 1 or years earlier (polars' `rolling_mean`/`rolling_std` carry a
running sum whose last digits depend on where the series starts). Maxima and minima
(`rolling_max`/`rolling_min`) are exact already. The exponential means (`ema`, `rsi`, `atr`) have
infinite memory by definition; the built-in strategies use the windowed forms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
from numba import njit

_BLOCK = 256  # outputs per block: the block's accumulators stay in L1 while the window is added in


@njit(cache=True, nogil=True)
def window_sums_nb(x: np.ndarray, window: int) -> np.ndarray:
    """out[t] = x[t-window+1] + x[t-window+2] + ... + x[t], added in that order; NaN before
    t = window - 1. Blocks of outputs are summed side by side (one add per window and bar, in SIMD
    lanes), and each lane still adds its own window from the oldest bar."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    acc = np.empty(_BLOCK)
    for start in range(window - 1, n, _BLOCK):
        m = min(_BLOCK, n - start)
        first = start - window + 1
        for i in range(m):
            acc[i] = x[first + i]
        for j in range(1, window):
            for i in range(m):
                acc[i] += x[first + j + i]
        for i in range(m):
            out[start + i] = acc[i]
    return out


@njit(cache=True, nogil=True)
def window_stds_nb(x: np.ndarray, window: int, ddof: int) -> np.ndarray:
    """Standard deviation of each window (two passes over the window: its mean, then the squared
    deviations from it, each added from the oldest bar); NaN before t = window - 1."""
    n = x.shape[0]
    mean = window_sums_nb(x, window) / window
    out = np.full(n, np.nan)
    acc = np.empty(_BLOCK)
    for start in range(window - 1, n, _BLOCK):
        m = min(_BLOCK, n - start)
        first = start - window + 1
        for i in range(m):
            d = x[first + i] - mean[start + i]
            acc[i] = d * d
        for j in range(1, window):
            for i in range(m):
                d = x[first + j + i] - mean[start + i]
                acc[i] += d * d
        for i in range(m):
            out[start + i] = np.sqrt(acc[i] / (window - ddof))
    return out


def _windowed(expr: pl.Expr, window: int, min_window: int, kernel: Callable[[np.ndarray], np.ndarray]) -> pl.Expr:
    """`kernel` over each window of `expr`; null where the window is incomplete or holds a null
    (as polars' rolling functions), NaN propagates. Works per group under `.over(...)`."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if window < min_window:
        return pl.lit(None, pl.Float64)
    # One pass per group: which windows are complete is decided in numpy beside the kernel, not by
    # a second rolling expression over the column.
    return expr.cast(pl.Float64).map_batches(lambda s: _masked_windows(s, window, kernel), return_dtype=pl.Float64)


def _masked_windows(values: pl.Series, window: int, kernel: Callable[[np.ndarray], np.ndarray]) -> pl.Series:
    """The kernel's value where the window ending at the row is complete and holds no null, else null.
    Nulls enter the kernel as 0.0 so they reach no other window's value."""
    reduced = kernel(np.ascontiguousarray(values.fill_null(0.0).to_numpy(), dtype=np.float64))
    complete = np.arange(values.len()) >= window - 1
    if values.null_count() and window <= values.len():
        # Nulls per window from a running count: integers, so exact whatever the history.
        seen = np.concatenate(([0], np.cumsum(values.is_null().to_numpy(), dtype=np.int64)))
        complete[window - 1 :] &= seen[window:] == seen[: seen.size - window]
    return pl.select(pl.when(pl.Series(complete)).then(pl.Series(values.name, reduced))).to_series()


def window_mean(expr: pl.Expr, window: int) -> pl.Expr:
    """Mean of the last `window` values, exact per window (see the module docstring)."""
    return _windowed(expr, window, 1, lambda x: window_sums_nb(x, window) / window)


def window_std(expr: pl.Expr, window: int, ddof: int = 1) -> pl.Expr:
    """Standard deviation of the last `window` values, exact per window; null if window <= ddof."""
    return _windowed(expr, window, ddof + 1, lambda x: window_stds_nb(x, window, ddof))


def simple_return(column: str = "close") -> pl.Expr:
    return pl.col(column) / pl.col(column).shift(1) - 1.0


def log_return(column: str = "close") -> pl.Expr:
    return (pl.col(column) / pl.col(column).shift(1)).log()


def sma(window: int, column: str = "close") -> pl.Expr:
    return window_mean(pl.col(column), window)


def ema(span: int, column: str = "close") -> pl.Expr:
    return pl.col(column).ewm_mean(span=span, adjust=False)


def _wilder(expr: pl.Expr, period: int) -> pl.Expr:
    """Wilder's smoothing (alpha = 1/period), the convention of RSI and ATR."""
    return expr.ewm_mean(alpha=1.0 / period, adjust=False, min_samples=period)


def rsi(period: int = 14, column: str = "close") -> pl.Expr:
    change = pl.col(column).diff()
    gain = _wilder(change.clip(lower_bound=0.0), period)
    loss = _wilder((-change).clip(lower_bound=0.0), period)
    return pl.when(loss == 0).then(pl.lit(100.0)).otherwise(100.0 - 100.0 / (1.0 + gain / loss))


def true_range() -> pl.Expr:
    prev_close = pl.col("close").shift(1)
    return pl.max_horizontal(
        pl.col("high") - pl.col("low"), (pl.col("high") - prev_close).abs(), (pl.col("low") - prev_close).abs()
    )


def atr(period: int = 14) -> pl.Expr:
    return _wilder(true_range(), period)


def rolling_volatility(window: int = 20, column: str = "close") -> pl.Expr:
    """Standard deviation of log returns over `window` bars (not annualized)."""
    return window_std(log_return(column), window)


def rsi_sma(period: int = 14, column: str = "close") -> pl.Expr:
    """Cutler's RSI: simple means of gains and losses over `period` changes. Finite memory, so a
    trailing window of period + 1 bars gives the same value as the full history."""
    change = pl.col(column).diff()
    gain = window_mean(change.clip(lower_bound=0.0), period)
    loss = window_mean((-change).clip(lower_bound=0.0), period)
    return pl.when(loss == 0).then(pl.lit(100.0)).otherwise(100.0 - 100.0 / (1.0 + gain / loss))


def atr_sma(period: int = 14) -> pl.Expr:
    """Average true range as a simple mean (finite memory, see `rsi_sma`)."""
    return window_mean(true_range(), period)
