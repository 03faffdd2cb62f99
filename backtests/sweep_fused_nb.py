"""The fused sweep kernel for strategies that declare `strategies.base.MovingAverageCross`.

Each distinct moving average and each distinct size column is computed once, outside, and passed
as rows; a combination is (fast row, slow row, size row, shorts on/off). The crossings are taken
inside the loop, so no (bar x combination) signal array ever exists. The per-bar step is
`signals_sweep_nb`'s (same fill, mark and decision helpers), so a combination gives the generic
path's numbers exactly; `tests/backtests/test_sweep.py` checks both against the engine.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backtests.kernels import next_order_nb, side_of_nb
from backtests.sweep_nb import _settle_nb


@njit(cache=True, parallel=True)
def ma_cross_sweep_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    means: np.ndarray,
    fast_row: np.ndarray,
    slow_row: np.ndarray,
    sizes: np.ndarray,
    size_row: np.ndarray,
    short: np.ndarray,
    fee: np.ndarray,
    slip: float,
    init_cash: float,
    whole: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k: the cross of
    means[fast_row[k]] over means[slow_row[k]], entries sized by sizes[size_row[k]], shorts when
    short[k]. A NaN mean compares False, as a null crossing is False in the strategy's frame."""
    n = close.shape[0]
    k_total = fast_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    for k in prange(k_total):
        fast = means[fast_row[k]]
        slow = means[slow_row[k]]
        size = sizes[size_row[k]]
        shorts = short[k]
        cash, pos, pending = init_cash, 0.0, np.nan
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            cash, pos, filled, equity, peak, dd = _settle_nb(cash, pos, pending, fill_price[t], close[t], fee[t], slip, whole, peak, dd)
            orders[k] += filled
            if t < n - 1:  # the order decided now fills on the next bar (NaN: none)
                up = t > 0 and fast[t] > slow[t] and fast[t - 1] <= slow[t - 1]
                down = t > 0 and fast[t] < slow[t] and fast[t - 1] >= slow[t - 1]
                _, pending = next_order_nb(side_of_nb(pos), up, down, down and shorts, up and shorts, size[t])
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders
