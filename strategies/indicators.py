"""Causal indicator expressions on a bar frame (one symbol, sorted by ts, or grouped with `.over`).

Each function returns a polars expression whose value at row t uses rows <= t only: rolling
windows, exponential means with `adjust=False`, shifts by +1. Nothing here looks forward.
"""

from __future__ import annotations

import polars as pl


def simple_return(column: str = "close") -> pl.Expr:
    return pl.col(column) / pl.col(column).shift(1) - 1.0


def log_return(column: str = "close") -> pl.Expr:
    return (pl.col(column) / pl.col(column).shift(1)).log()


def sma(window: int, column: str = "close") -> pl.Expr:
    return pl.col(column).rolling_mean(window_size=window)


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
    return log_return(column).rolling_std(window_size=window)


def rsi_sma(period: int = 14, column: str = "close") -> pl.Expr:
    """Cutler's RSI: simple means of gains and losses over `period` changes. Finite memory, so a
    trailing window of period + 1 bars gives the same value as the full history."""
    change = pl.col(column).diff()
    gain = change.clip(lower_bound=0.0).rolling_mean(period)
    loss = (-change).clip(lower_bound=0.0).rolling_mean(period)
    return pl.when(loss == 0).then(pl.lit(100.0)).otherwise(100.0 - 100.0 / (1.0 + gain / loss))


def atr_sma(period: int = 14) -> pl.Expr:
    """Average true range as a simple mean (finite memory, see `rsi_sma`)."""
    return true_range().rolling_mean(period)
