"""`threshold_sweep_nb`'s rules and numbers, from event to event instead of bar by bar.

Each distinct (indicator row, level) pair, a "line", gets two bitsets once: the bars where the
indicator crosses below the level and the ones where it crosses above (decision bars 1..n-2 only).
A combination then jumps to the next bar whose signals can change what it holds: flat, an entry
either way; long, a long exit or a short entry; short, a short exit or a long entry (every other bar
leaves `next_direction` on the held side). That bar runs the old per-bar step exactly; the bars
between are marks only, settled per stretch (`sweep_stretch_nb.mark_stretch_nb`).
`tests/backtests/test_sweep_threshold_fast.py` checks it bit for bit against `threshold_sweep_nb`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backtests.kernels import next_order_nb, side_of_nb
from backtests.sweep_nb import _fill_nb
from backtests.sweep_sma_nb import LANES, block_means_nb
from backtests.sweep_stretch_nb import mark_stretch_nb, next_bit_nb, range_tables_nb, set_bit_nb
from backtests.sweep_threshold_nb import _above_nb, _below_nb

BARS = 2048  # bars walked by every combination of a chunk before the next stretch


@njit(cache=True, nogil=True)
def rsi_sma_rows_nb(close: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """`strategies.indicators.rsi_sma(w)` of finite closes for each window w (ascending, distinct),
    as a (window x bar) array with NaN where the frame has null: the means of the gains and losses
    of the last w changes, each summed from its oldest change as `window_sums_nb`, then the same
    arithmetic."""
    n = close.shape[0]
    gain, loss = np.zeros(n), np.zeros(n)  # the first change is null: 0.0 in the sums, masked below
    for t in range(1, n):
        change = close[t] - close[t - 1]
        gain[t] = max(change, 0.0)
        loss[t] = max(-change, 0.0)
    # Every window's mean ending at each bar, summed from its oldest change: sma's own block fold.
    gains, losses, acc = np.empty((windows.shape[0], n)), np.empty((windows.shape[0], n)), np.empty(LANES)
    block_means_nb(gain, windows, 1, n, gains, acc)
    block_means_nb(loss, windows, 1, n, losses, acc)
    out = np.empty((windows.shape[0], n))
    for i in range(windows.shape[0]):
        w = windows[i]
        for t in range(n):
            if t < w:  # the window holds the first (null) change, or starts before the bars
                out[i, t] = np.nan
            else:
                g, lo = gains[i, t], losses[i, t]
                out[i, t] = 100.0 if lo == 0 else 100.0 - 100.0 / (1.0 + g / lo)
    return out


@njit(cache=True, parallel=True)
def crossing_bits_nb(values: np.ndarray, line_row: np.ndarray, line_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(below, above): per line l, the bits of the bars t in 1..n-2 where values[line_row[l]] crosses
    below / above line_level[l] (`_below_nb` / `_above_nb`)."""
    n = values.shape[1]
    words = (n + 63) >> 6
    lines = line_row.shape[0]
    below = np.zeros((lines, words), dtype=np.uint64)
    above = np.zeros((lines, words), dtype=np.uint64)
    for li in prange(lines):
        x, level = values[line_row[li]], line_level[li]
        for t in range(1, n - 1):
            if _below_nb(x[t], x[t - 1], level):
                set_bit_nb(below[li], t)
            elif _above_nb(x[t], x[t - 1], level):
                set_bit_nb(above[li], t)
    return below, above


@njit(cache=True, parallel=True)
def threshold_fast_sweep_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    values: np.ndarray,
    below: np.ndarray,
    above: np.ndarray,
    lower_line: np.ndarray,
    upper_line: np.ndarray,
    exit_line: np.ndarray,
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
    chunks: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k, as `threshold_sweep_nb` gives
    them; its lower / upper / exit levels' bits are the rows lower_line[k] / upper_line[k] /
    exit_line[k] of `crossing_bits_nb`'s (below, above). Closes must be finite. Combinations are
    dealt into `chunks` run in parallel, each walking the bars BARS at a time (every combination of
    a chunk through one stretch of bars while its data is in cache)."""
    n = close.shape[0]
    k_total = value_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    pmin, pmax, smin, smax, spmin, spmax = range_tables_nb(close)
    none = np.zeros(below.shape[1], dtype=np.uint64)
    for c in prange(chunks):
        m = (k_total - c + chunks - 1) // chunks  # combinations c, c + chunks, ...
        cash, pos, pending = np.full(m, init_cash), np.zeros(m), np.full(m, np.nan)
        peak, dd = np.full(m, init_cash), np.zeros(m)
        for t0 in range(0, n, BARS):
            t1 = min(n, t0 + BARS)
            for i in range(m):
                k = c + i * chunks
                x = values[value_row[k]]
                lo, hi, ex, shorts = lower[k], upper[k], exit_level[k], short[k]
                enter_long, exit_long = below[lower_line[k]], above[exit_line[k]]
                enter_short = above[upper_line[k]] if shorts else none
                exit_short = below[exit_line[k]] if shorts else none
                c_cash, c_pos, c_pend, c_peak, c_dd = cash[i], pos[i], pending[i], peak[i], dd[i]
                t = t0
                while t < t1:
                    if not np.isnan(c_pend):  # the order decided on the bar before fills now
                        c_cash, c_pos, filled = _fill_nb(c_cash, c_pos, c_pend, fill_price[t], fee[t], slip, whole)
                        orders[k] += filled
                        c_pend = np.nan
                    held = side_of_nb(c_pos)
                    if held == 0:
                        e = next_bit_nb(enter_long, enter_short, t, t1)
                    elif held > 0:
                        e = next_bit_nb(exit_long, enter_short, t, t1)
                    else:
                        e = next_bit_nb(enter_long, exit_short, t, t1)
                    if e == t1:  # nothing to decide in this block: marks only
                        c_peak, c_dd = mark_stretch_nb(close, pmin, pmax, smin, smax, spmin, spmax, t, t1 - 1, c_cash, c_pos, c_peak, c_dd)
                        break
                    c_peak, c_dd = mark_stretch_nb(close, pmin, pmax, smin, smax, spmin, spmax, t, e, c_cash, c_pos, c_peak, c_dd)
                    # bits are set on decision bars 1..n-2 only
                    el = _below_nb(x[e], x[e - 1], lo)
                    xl = _above_nb(x[e], x[e - 1], ex)
                    es = shorts and _above_nb(x[e], x[e - 1], hi)
                    xs = shorts and _below_nb(x[e], x[e - 1], ex)
                    _, c_pend = next_order_nb(held, el, xl, es, xs, sizes[size_row[k], e])
                    t = e + 1
                cash[i], pos[i], pending[i], peak[i], dd[i] = c_cash, c_pos, c_pend, c_peak, c_dd
        for i in range(m):
            k = c + i * chunks
            final[k] = cash[i] + pos[i] * close[n - 1]
            max_dd[k] = dd[i]
    return final, max_dd, orders
