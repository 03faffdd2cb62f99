"""The fused sweep kernel for strategies that declare `strategies.base.ThresholdCross`.

Each distinct indicator series (one per window) and each distinct size column is computed once,
outside, and passed as rows; a combination is (indicator row, its three levels, size row, shorts
on/off). The level crossings are taken inside the loop, so no (bar x combination) signal array ever
exists. The per-bar step is `signals_sweep_nb`'s (same fill, mark and decision helpers), so a
combination gives the generic path's numbers exactly; `tests/backtests/test_sweep_fused_rsi.py`
checks it against the engine.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backtests.kernels import next_order_nb, side_of_nb
from backtests.sweep_nb import _settle_nb


@njit(cache=True, inline="always")
def _below_nb(now: float, before: float, level: float) -> bool:
    """`strategies.base.crossed_below` against a level: below now, not below before (NaN: False)."""
    return now < level and before >= level


@njit(cache=True, inline="always")
def _above_nb(now: float, before: float, level: float) -> bool:
    """`strategies.base.crossed_above` against a level: above now, not above before (NaN: False)."""
    return now > level and before <= level


@njit(cache=True, parallel=True)
def threshold_sweep_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    values: np.ndarray,
    value_row: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    exit_level: np.ndarray,
    sizes: np.ndarray,
    size_row: np.ndarray,
    short: np.ndarray,
    fee: np.ndarray,
    slip: float,
    init_cash: float,
    whole: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k, x = values[value_row[k]]:
    long entries where x crosses below lower[k], long exits where it crosses above exit_level[k];
    when short[k], short entries where it crosses above upper[k] and short exits where it crosses
    below exit_level[k]; entries sized by sizes[size_row[k]]. A NaN value compares False, as a null
    crossing is False in the strategy's frame."""
    n = close.shape[0]
    k_total = value_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    for k in prange(k_total):
        x = values[value_row[k]]
        size = sizes[size_row[k]]
        lo, hi, ex, shorts = lower[k], upper[k], exit_level[k], short[k]
        cash, pos, pending = init_cash, 0.0, np.nan
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            cash, pos, filled, equity, peak, dd = _settle_nb(cash, pos, pending, fill_price[t], close[t], fee[t], slip, whole, peak, dd)
            orders[k] += filled
            if 0 < t < n - 1:  # the order decided now fills on the next bar (NaN: none); bar 0 has no crossing
                entry_long = _below_nb(x[t], x[t - 1], lo)
                exit_long = _above_nb(x[t], x[t - 1], ex)
                entry_short = shorts and _above_nb(x[t], x[t - 1], hi)
                exit_short = shorts and _below_nb(x[t], x[t - 1], ex)
                _, pending = next_order_nb(side_of_nb(pos), entry_long, exit_long, entry_short, exit_short, size[t])
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders
