"""Compiled sweep kernels: one single-symbol portfolio per parameter combination, in parallel.

The order rules are the engine's (entries sized by `strategies.entries` on the equity left after
closing an opposite position, exits to flat, fills at the next bar's price, sells and buys with
slippage then fees, whole shares toward zero, buys capped by cash, signals acting on the side the
fills left, not the side the signals asked for), written once here for the per-combination loop
(one symbol: the free-cash cap equals the equity left and never binds); `tests/backtests/test_sweep.py` checks every combination against the engine.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backtests.kernels import bracket_step_nb, entry_amount_nb, half_exit_nb, next_order_nb, side_of_nb

REL_TOL = 1e-9  # vectorbt's is_close tolerance


@njit(cache=True, inline="always")
def _trade_nb(cash: float, pos: float, delta: float, price: float, fee: float, slip: float, whole: bool) -> tuple[float, float, int]:
    """Trades `delta` shares (signed) at `price`; returns cash, position, filled."""
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


@njit(cache=True, inline="always")
def _fill_nb(cash: float, pos: float, target: float, price: float, fee: float, slip: float, whole: bool) -> tuple[float, float, int]:
    """An entry to `target` (side x size, sized by `strategies.entries`), or an exit if 0, at `price`;
    returns cash, position, filled."""
    if target == 0:
        return _trade_nb(cash, pos, -pos, price, fee, slip, whole)
    return _trade_nb(cash, pos, entry_amount_nb(target, pos, cash + pos * price, price, fee, slip, whole, np.inf), price, fee, slip, whole)


@njit(cache=True, inline="always")
def _mark_nb(cash: float, pos: float, close: float, peak: float, dd: float) -> tuple[float, float, float]:
    """Equity at the close, and the running peak and max drawdown after it."""
    equity = cash + pos * close
    peak = max(peak, equity)
    return equity, peak, max(dd, 1.0 - equity / peak)


@njit(cache=True, inline="always")
def _settle_nb(
    cash: float, pos: float, pending: float, fill_price: float, close: float, fee: float, slip: float, whole: bool, peak: float, dd: float
) -> tuple[float, float, int, float, float, float]:
    """One bar of a signal-driven portfolio before its signals are read: the order decided on the
    bar before (`pending`, NaN: none) fills, then the close marks it. Returns cash, position,
    filled, equity, peak, max drawdown."""
    filled = 0
    if not np.isnan(pending):
        cash, pos, filled = _fill_nb(cash, pos, pending, fill_price, fee, slip, whole)
    equity, peak, dd = _mark_nb(cash, pos, close, peak, dd)
    return cash, pos, filled, equity, peak, dd


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
        cash, pos, pending = init_cash, 0.0, np.nan
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            cash, pos, filled, equity, peak, dd = _settle_nb(cash, pos, pending, fill_price[t], close[t], fee[t], slip, whole, peak, dd)
            orders[k] += filled
            # The order decided now fills on the next bar (NaN: none); the last bar's has no bar to fill on.
            held = side_of_nb(pos)
            _, pending = next_order_nb(held, entry_long[t, k], exit_long[t, k], entry_short[t, k], exit_short[t, k], size[t, k])
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders


@njit(cache=True, parallel=True)
def bracket_sweep_nb(
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    entry_long: np.ndarray,
    exit_long: np.ndarray,
    entry_short: np.ndarray,
    exit_short: np.ndarray,
    size: np.ndarray,
    stop: np.ndarray,
    target1: np.ndarray,
    target2: np.ndarray,
    fee: np.ndarray,
    fee_bps: float,
    fee_per_share: float,
    slip: float,
    init_cash: float,
    whole: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-combination loop for strategies with bracket levels, long and short (the engine's
    `bracket_orders_nb` rules: one bracket exit per bar, none on a bar that fills a signal)."""
    n, k_total = entry_long.shape
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    for k in prange(k_total):
        cash, pos, pending = init_cash, 0.0, np.nan
        phase, entry = 0, np.nan
        lv_stop, lv_t1, lv_t2 = np.nan, np.nan, np.nan
        p_stop, p_t1, p_t2, from_flat = np.nan, np.nan, np.nan, False
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            if not np.isnan(pending):
                cash, pos, filled = _fill_nb(cash, pos, pending, fill_price[t], fee[t], slip, whole)
                orders[k] += filled
                if pending * pos > 0 and from_flat:  # an entry from flat that got shares: its bracket
                    phase, entry = 1, fill_price[t]
                    lv_stop, lv_t1, lv_t2 = p_stop, p_t1, p_t2
                else:
                    phase = 0
                pending = np.nan
            elif pos != 0 and phase > 0:  # never on the fill's own bar: this is the fill branch's `elif`
                side = side_of_nb(pos)
                phase, action, price = bracket_step_nb(phase, entry, lv_stop, lv_t1, lv_t2, open_[t], high[t], low[t], side)
                if action > 0:
                    delta = half_exit_nb(pos, side, whole) if action == 1 else -pos
                    cash, pos, filled = _trade_nb(cash, pos, delta, price, fee_bps + fee_per_share / price, slip, whole)
                    orders[k] += filled
            equity, peak, dd = _mark_nb(cash, pos, close[t], peak, dd)
            held = side_of_nb(pos)  # the last bar's order fills on no bar: the loop ends
            _, order = next_order_nb(held, entry_long[t, k], exit_long[t, k], entry_short[t, k], exit_short[t, k], size[t, k])
            if not np.isnan(order):
                pending, from_flat = order, held == 0
                p_stop, p_t1, p_t2 = stop[t, k], target1[t, k], target2[t, k]
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders
