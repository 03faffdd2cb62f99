"""Compiled sweep kernels: one single-symbol portfolio per parameter combination, in parallel.

The order rules are the engine's (targets as a share of value, fills at the next bar's price,
sells and buys with slippage then fees, whole shares toward zero, buys capped by cash), written
once here for the per-combination loop; `tests/backtests/test_sweep.py` checks every combination
against the vectorbt engine.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backtests.kernels import next_direction_nb

REL_TOL = 1e-9  # vectorbt's is_close tolerance


@njit(cache=True, inline="always")
def _fill_nb(cash: float, pos: float, target: float, price: float, fee: float, slip: float, whole: bool) -> tuple[float, float, int]:
    """Moves the position toward `target` (share of value) at `price`; returns cash, position, filled."""
    value = cash + pos * price
    delta = target * value / price - pos
    if delta > 0:
        adj = price * (1.0 + slip)
        size = np.floor(delta) if whole else delta
        cost = size * adj * (1.0 + fee)
        if cost > cash and abs(cost - cash) > REL_TOL * max(abs(cost), abs(cash)):
            size = cash / (1.0 + fee) / adj
            if whole:
                size = np.floor(size)
        if size <= 0:
            return cash, pos, 0
        return cash - size * adj - size * adj * fee, pos + size, 1
    if delta < 0:
        adj = price * (1.0 - slip)
        size = np.floor(-delta) if whole else -delta
        if size <= 0:
            return cash, pos, 0
        return cash + size * adj - size * adj * fee, pos - size, 1
    return cash, pos, 0


@njit(cache=True, parallel=True)
def sma_cross_sweep_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    means: np.ndarray,
    fast_row: np.ndarray,
    slow_row: np.ndarray,
    fee: np.ndarray,
    slip: float,
    init_cash: float,
    fraction: float,
    whole: bool,
    allow_short: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per (fast, slow) pair; `means` holds one moving
    average per distinct window (rows), so each is computed once for all pairs."""
    n = close.shape[0]
    k_total = fast_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    for k in prange(k_total):
        fast = means[fast_row[k]]
        slow = means[slow_row[k]]
        cash, pos, held, pending = init_cash, 0.0, 0, np.nan
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            if not np.isnan(pending):
                cash, pos, filled = _fill_nb(cash, pos, pending, fill_price[t], fee[t], slip, whole)
                orders[k] += filled
                pending = np.nan
            equity = cash + pos * close[t]
            peak = max(peak, equity)
            dd = max(dd, 1.0 - equity / peak)
            if t == 0 or t == n - 1:
                continue
            up = fast[t] > slow[t] and fast[t - 1] <= slow[t - 1]
            down = fast[t] < slow[t] and fast[t - 1] >= slow[t - 1]
            nxt = next_direction_nb(held, up, down, down and allow_short, up and allow_short)
            if nxt != held:
                pending = nxt * fraction
                held = nxt
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders


@njit(cache=True, parallel=True)
def signals_sweep_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    entry_long: np.ndarray,
    exit_long: np.ndarray,
    entry_short: np.ndarray,
    exit_short: np.ndarray,
    size: np.ndarray,
    fee: np.ndarray,
    slip: float,
    init_cash: float,
    whole: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same per-combination loop for any strategy, on precomputed (bar x combination) signals."""
    n, k_total = entry_long.shape
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    for k in prange(k_total):
        cash, pos, held, pending = init_cash, 0.0, 0, np.nan
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            if not np.isnan(pending):
                cash, pos, filled = _fill_nb(cash, pos, pending, fill_price[t], fee[t], slip, whole)
                orders[k] += filled
                pending = np.nan
            equity = cash + pos * close[t]
            peak = max(peak, equity)
            dd = max(dd, 1.0 - equity / peak)
            if t == n - 1:
                continue
            nxt = next_direction_nb(held, entry_long[t, k], exit_long[t, k], entry_short[t, k], exit_short[t, k])
            if nxt != held and (nxt == 0 or np.isfinite(size[t, k])):
                pending = nxt * size[t, k] if nxt != 0 else 0.0
                held = nxt
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders
