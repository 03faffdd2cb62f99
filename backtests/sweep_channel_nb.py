"""The fused sweep kernel for strategies that declare `strategies.base.ChannelBreakout`.

Each distinct channel (the highest high and lowest low of the `w` bars before each bar), each
distinct ATR and each distinct size column is computed once, outside, and passed as rows; a
combination is (entry channel row, exit channel row, ATR row, its three level multiples, size row,
shorts on/off). Breakouts and bracket levels are taken inside the loop, so no (bar x combination)
array ever exists. The per-bar step is `bracket_sweep_nb`'s (same fill, bracket and mark helpers),
so a combination gives the generic path's numbers exactly; `tests/backtests/test_sweep_fused_donchian.py`
checks it against the engine.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backtests.kernels import bracket_step_nb, half_exit_nb, next_order_nb, side_of_nb
from backtests.sweep_nb import _fill_nb, _mark_nb, _trade_nb


@njit(cache=True, parallel=True)
def channel_sweep_nb(
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    channel_high: np.ndarray,
    channel_low: np.ndarray,
    entry_row: np.ndarray,
    exit_row: np.ndarray,
    atrs: np.ndarray,
    atr_row: np.ndarray,
    stop_mult: np.ndarray,
    target1_mult: np.ndarray,
    target2_mult: np.ndarray,
    sizes: np.ndarray,
    size_row: np.ndarray,
    short_levels: np.ndarray,
    short: np.ndarray,
    brackets: bool,
    fee: np.ndarray,
    fee_bps: float,
    fee_per_share: float,
    slip: float,
    init_cash: float,
    whole: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k, with c the close and
    hi/lo = channel_high/channel_low rows: long entries where c > hi[entry_row[k]], long exits where
    c < lo[exit_row[k]]; when short[k] (the parameter and the config both allow shorts), short
    entries where c < lo[entry_row[k]], short exits where c > hi[exit_row[k]]; entries sized by
    sizes[size_row[k]]. Levels from the decision bar: c -/+ side x multiple x ATR, side -1 where
    short_levels[k] (the parameter) and the bar breaks down without breaking up (NaN compares
    False, as a null breakout is False in the strategy's frame). With `brackets` the engine's
    bracket rules act on them (one bracket exit per bar, none on a bar that fills a signal)."""
    n = close.shape[0]
    k_total = entry_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    for k in prange(k_total):
        entry_high, entry_low = channel_high[entry_row[k]], channel_low[entry_row[k]]
        exit_high, exit_low = channel_high[exit_row[k]], channel_low[exit_row[k]]
        atr, size = atrs[atr_row[k]], sizes[size_row[k]]
        shorts, mirrored = short[k], short_levels[k]
        cash, pos, pending = init_cash, 0.0, np.nan
        phase, fill_bar, entry = 0, -1, np.nan
        lv_stop, lv_t1, lv_t2 = np.nan, np.nan, np.nan
        p_stop, p_t1, p_t2, from_flat = np.nan, np.nan, np.nan, False
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            if not np.isnan(pending):
                cash, pos, filled = _fill_nb(cash, pos, pending, fill_price[t], fee[t], slip, whole)
                orders[k] += filled
                if brackets and pending * pos > 0 and from_flat:  # an entry from flat that got shares: its bracket
                    phase, fill_bar, entry = 1, t, fill_price[t]
                    lv_stop, lv_t1, lv_t2 = p_stop, p_t1, p_t2
                else:
                    phase = 0
                pending = np.nan
            elif pos != 0 and phase > 0 and t > fill_bar:
                side = side_of_nb(pos)
                phase, action, price = bracket_step_nb(phase, entry, lv_stop, lv_t1, lv_t2, open_[t], high[t], low[t], side)
                if action > 0:
                    delta = half_exit_nb(pos, side, whole) if action == 1 else -pos
                    cash, pos, filled = _trade_nb(cash, pos, delta, price, fee_bps + fee_per_share / price, slip, whole)
                    orders[k] += filled
            equity, peak, dd = _mark_nb(cash, pos, close[t], peak, dd)
            if t == n - 1:
                continue
            c = close[t]
            breakout_up = c > entry_high[t]
            breakout_down = c < entry_low[t]
            held = side_of_nb(pos)
            _, order = next_order_nb(held, breakout_up, c < exit_low[t], shorts and breakout_down, shorts and c > exit_high[t], size[t])
            if not np.isnan(order):
                pending, from_flat = order, held == 0
                # `breakout_down & ~breakout_up` in the frame: a null (NaN) channel makes it False.
                side_level = -1.0 if mirrored and breakout_down and c <= entry_high[t] else 1.0
                p_stop = c - side_level * stop_mult[k] * atr[t]
                p_t1 = c + side_level * target1_mult[k] * atr[t]
                p_t2 = c + side_level * target2_mult[k] * atr[t]
        final[k] = equity
        max_dd[k] = dd
    return final, max_dd, orders
