"""Per-symbol features for the lake: returns, moving averages, RSI, ATR, volatility.

The expressions are the strategies' own (strategies/indicators.py), so a feature in the lake and a
signal in a backtest are the same number. All causal: row t uses rows <= t of its symbol.
"""

from __future__ import annotations

import polars as pl

from strategies import indicators as ind

FEATURES: dict[str, pl.Expr] = {
    "ret_1": ind.simple_return(),
    "log_ret_1": ind.log_return(),
    "sma_20": ind.sma(20),
    "sma_50": ind.sma(50),
    "ema_12": ind.ema(12),
    "ema_26": ind.ema(26),
    "rsi_14": ind.rsi(14),
    "atr_14": ind.atr(14),
    "vol_20": ind.rolling_volatility(20),
}


def compute_features(bars: pl.DataFrame) -> pl.DataFrame:
    """Bars plus one column per feature, computed per symbol in ts order."""
    ordered = bars.sort("symbol", "ts")
    return ordered.with_columns(expr.over("symbol").alias(name) for name, expr in FEATURES.items())
