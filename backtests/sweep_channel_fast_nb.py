"""`channel_sweep_nb`'s rules and numbers, from event to event instead of bar by bar.

Each distinct channel window gets two bitsets once: the decision bars whose close breaks above its
high and the ones whose close breaks below its low (`channel_bits_nb` computes the Donchian channels
itself, every window in one compiled pass per side; `breakout_bits_nb` takes channel rows
computed elsewhere). The kernel reads only these bits, never a channel row. A combination visits
only the bars where something can happen, with the old per-bar step run exactly there: a bar that
fills an order, the next breakout that can change what it holds (flat: an entry either way; long: a
long exit or a short entry; short: a short exit or a long entry; every other bar leaves
`next_direction` on the held side), and the first bar whose range touches the active bracket level
(`bracket_step` acts only when the low reaches the stop or the high a target, mirrored for a short:
found by binary lifting over blocks of lows and highs). The bars between are marks only, settled
per stretch (`sweep_stretch_nb.mark_stretch_nb`). Every combination of a chunk walks BARS bars
before the next stretch, so the data it reads is in cache.
The chunks run on Python threads over a nogil compiled `_chunk_nb`, not under an OpenMP `prange`
(no idle worker at a barrier). Compiled so it needs what numba gives a `prange` body and a plain
function lacks, or it runs at half the speed (measured, 2026-12-01): `error_model="numpy"` and
arrays without an owner (`unowned_nb`: each copy of an owned array view is an atomic count on a
meminfo both threads share).
`tests/backtests/test_sweep_channel_fast.py` checks it bit for bit against `channel_sweep_nb`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from backtests.kernels import bracket_step_nb, half_exit_nb, next_order_nb, side_of_nb
from backtests.nb_intrinsics import unowned_nb
from backtests.sweep_nb import _fill_nb, _trade_nb
from backtests.sweep_stretch_nb import (
    bit_nb,
    block_table_nb,
    first_touch_nb,
    mark_stretch_nb,
    next_bit_nb,
    range_tables_nb,
    set_bit_nb,
)

BARS = 2048  # bars walked by every combination of a chunk before the next stretch


@njit(cache=True, inline="always")
def _mark_at_nb(cash: float, pos: float, close: float, peak: float, dd: float) -> tuple[float, float]:
    """The peak and max drawdown after marking one bar at its close (`sweep_nb._mark_nb`'s)."""
    equity = cash + pos * close
    peak = max(peak, equity)
    return peak, max(dd, 1.0 - equity / peak)


@njit(cache=True, parallel=True)
def breakout_bits_nb(close: np.ndarray, channel_high: np.ndarray, channel_low: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(up, down, mirrors): per channel row, the bits of the bars t in 0..n-2 whose close is above
    the channel's high / below its low (NaN compares False); `mirrors` False when some bar breaks
    below a low whose high is NaN (there `c <= high` is False, which the bits cannot tell from a
    close above the high: the kernel mirrors levels on `down and not up`)."""
    rows, n = channel_high.shape
    words = (n + 63) >> 6
    up = np.zeros((rows, words), dtype=np.uint64)
    down = np.zeros((rows, words), dtype=np.uint64)
    unmirrored = np.zeros(rows, dtype=np.bool_)
    for r in prange(rows):
        for t in range(n - 1):
            if close[t] > channel_high[r, t]:
                set_bit_nb(up[r], t)
            if close[t] < channel_low[r, t]:
                set_bit_nb(down[r], t)
                unmirrored[r] |= np.isnan(channel_high[r, t])
    return up, down, not unmirrored.any()


@njit(cache=True, nogil=True)
def _side_bits_nb(x: np.ndarray, close: np.ndarray, windows: np.ndarray, sign: float, bits: np.ndarray) -> None:
    """Sets bit t of row r (windows[r] <= t <= n-2) where sign x close[t] is above the highest
    sign x x of the windows[r] bars before it (sign 1: a close above the highest high; -1: below the
    lowest low, on negated values: exact), every window in one pass. The close breaks window w
    exactly when the latest bar j < t with sign x x[j] >= sign x close[t] is before t - w; j is on
    the stack of the bars not topped since (each at least as high as every later one: the bars
    between are lower, none of them can be j), kept only as far back as the widest window."""
    n = x.shape[0]
    order = np.argsort(windows)
    widest = windows[order[-1]]
    size = 1
    while size < widest + 2:
        size <<= 1
    mask = size - 1
    stack = np.empty(size, dtype=np.int64)  # bar indices, increasing from lo to hi - 1 (ring)
    lo, hi = 0, 0
    for t in range(n - 1):
        while lo < hi and stack[lo & mask] < t - widest:
            lo += 1
        c = sign * close[t]
        i = hi - 1
        while i >= lo and sign * x[stack[i & mask]] < c:
            i -= 1
        j = stack[i & mask] if i >= lo else t - widest - 1  # none this side of the widest window
        for r in order:  # narrowest first: once one is not broken, no wider one is
            w = windows[r]
            if w >= t - j or w > t:
                break
            set_bit_nb(bits[r], t)
        v = sign * x[t]
        while hi > lo and sign * x[stack[(hi - 1) & mask]] < v:
            hi -= 1
        stack[hi & mask] = t
        hi += 1


def channel_bits_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`breakout_bits_nb`'s (up, down) of the Donchian channels `high.rolling_max(w).shift(1)` /
    `low.rolling_min(w).shift(1)` of each window w, without their rows: the highest high and lowest
    low of the w bars before bar t (none before bar w). Max and min are exact, so the bits are the
    ones the polars rows give. High and low must be finite. The two sides run on two Python threads
    when numba has two (the compiled part releases the GIL)."""
    n = close.shape[0]
    words = (n + 63) >> 6
    rows = windows.shape[0]
    up = np.zeros((rows, words), dtype=np.uint64)
    down = np.zeros((rows, words), dtype=np.uint64)
    if rows == 0:
        return up, down
    sides = ((high, 1.0, up), (low, -1.0, down))
    with ThreadPoolExecutor(max(1, min(2, numba.get_num_threads()))) as pool:
        list(pool.map(lambda side: _side_bits_nb(side[0], close, windows, side[1], side[2]), sides))
    return up, down


@njit(cache=True, nogil=True, error_model="numpy")  # as the prange body it was (numba compiles those so): no zero-division branches
def _chunk_nb(
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    atrs: np.ndarray,
    atr_row: np.ndarray,
    entry_row: np.ndarray,
    exit_row: np.ndarray,
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
    chunks: int,
    c: int,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    low_min: np.ndarray,
    high_max: np.ndarray,
    final: np.ndarray,
    max_dd: np.ndarray,
    orders: np.ndarray,
) -> None:
    """Combinations c, c + chunks, ... of `channel_fast_sweep_nb`, BARS bars at a time: their final
    equity, max drawdown and order count written at their index (`tables`: `range_tables_nb` of the
    close; `low_min` / `high_max`: `block_table_nb` of the lows / highs)."""
    n = close.shape[0]
    k_total = entry_row.shape[0]
    # The arrays the events read, and the views taken of them, unowned: no atomic count per copy.
    fill_price, open_, high, low, close = unowned_nb(fill_price), unowned_nb(open_), unowned_nb(high), unowned_nb(low), unowned_nb(close)
    up, down, atrs, sizes, fee = unowned_nb(up), unowned_nb(down), unowned_nb(atrs), unowned_nb(sizes), unowned_nb(fee)
    low_min, high_max = unowned_nb(low_min), unowned_nb(high_max)
    pmin, pmax, smin, smax, spmin, spmax = tables
    pmin, pmax, smin, smax, spmin, spmax = unowned_nb(pmin), unowned_nb(pmax), unowned_nb(smin), unowned_nb(smax), unowned_nb(spmin), unowned_nb(spmax)
    none = np.zeros(up.shape[1], dtype=np.uint64)
    m = (k_total - c + chunks - 1) // chunks  # combinations c, c + chunks, ...
    cash, pos, pending = np.full(m, init_cash), np.zeros(m), np.full(m, np.nan)
    peak, dd = np.full(m, init_cash), np.zeros(m)
    phase = np.zeros(m, dtype=np.int64)
    entry, lv_stop, lv_t1, lv_t2 = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan)
    p_stop, p_t1, p_t2, from_flat = np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan), np.zeros(m, dtype=np.bool_)
    count = np.zeros(m, dtype=np.int64)  # this chunk's order counts: `orders` shares cache lines with the other chunks'
    for t0 in range(0, n, BARS):
        t1 = min(n, t0 + BARS)
        for i in range(m):
            k = c + i * chunks
            atr, size = atrs[atr_row[k]], sizes[size_row[k]]
            shorts, mirrored = short[k], short_levels[k]
            s_mult, t1_mult, t2_mult = stop_mult[k], target1_mult[k], target2_mult[k]
            up_entry, up_exit = up[entry_row[k]], up[exit_row[k]]
            down_entry, down_exit = down[entry_row[k]], down[exit_row[k]]
            short_entry = down_entry if shorts else none
            short_exit = up_exit if shorts else none
            c_cash, c_pos, c_pend, c_peak, c_dd = cash[i], pos[i], pending[i], peak[i], dd[i]
            c_phase, c_entry, c_orders = phase[i], entry[i], count[i]
            c_stop, c_t1, c_t2 = lv_stop[i], lv_t1[i], lv_t2[i]
            c_pstop, c_pt1, c_pt2, c_from_flat = p_stop[i], p_t1[i], p_t2[i], from_flat[i]
            t = t0
            while t < t1:
                if not np.isnan(c_pend):  # channel_sweep_nb's step on this bar: the fill
                    c_cash, c_pos, filled = _fill_nb(c_cash, c_pos, c_pend, fill_price[t], fee[t], slip, whole)
                    c_orders += filled
                    if brackets and c_pend * c_pos > 0 and c_from_flat:  # an entry from flat that got shares: its bracket
                        c_phase, c_entry = 1, fill_price[t]
                        c_stop, c_t1, c_t2 = c_pstop, c_pt1, c_pt2
                    else:
                        c_phase = 0
                    c_pend = np.nan
                    c_peak, c_dd = _mark_at_nb(c_cash, c_pos, close[t], c_peak, c_dd)
                else:
                    held = side_of_nb(c_pos)
                    if held == 0:  # flat: its marks are the one made when it went flat (the same cash), none to make
                        t = next_bit_nb(up_entry, short_entry, t, t1)
                        if t == t1:
                            break
                    else:
                        if held > 0:
                            e = next_bit_nb(down_exit, short_entry, t, t1)
                        else:
                            e = next_bit_nb(up_entry, short_exit, t, t1)
                        if c_phase > 0 and e > t:  # the bracket's first touch before it
                            stop = c_stop if c_phase == 1 else c_entry
                            target = c_t1 if c_phase == 1 and not np.isnan(c_t1) else c_t2
                            if held > 0:
                                e = first_touch_nb(low, high, low_min, high_max, t, e - 1, stop, target)
                            else:
                                e = first_touch_nb(low, high, low_min, high_max, t, e - 1, target, stop)
                        if e > t:
                            c_peak, c_dd = mark_stretch_nb(close, pmin, pmax, smin, smax, spmin, spmax, t, e - 1, c_cash, c_pos, c_peak, c_dd)
                        if e == t1:
                            break
                        t = e  # channel_sweep_nb's step, on this bar
                        if c_phase > 0:  # never on a fill bar: a fill moves t on
                            c_phase, action, price = bracket_step_nb(c_phase, c_entry, c_stop, c_t1, c_t2, open_[t], high[t], low[t], held)
                            if action > 0:
                                delta = half_exit_nb(c_pos, held, whole) if action == 1 else -c_pos
                                c_cash, c_pos, filled = _trade_nb(c_cash, c_pos, delta, price, fee_bps + fee_per_share / price, slip, whole)
                                c_orders += filled
                        c_peak, c_dd = _mark_at_nb(c_cash, c_pos, close[t], c_peak, c_dd)
                u = t  # the decision bar: its signals, an order filled on the next bar
                t += 1  # at n the loop ends: an order decided on the last bar never fills
                breakout_up = bit_nb(up_entry, u)
                breakout_down = bit_nb(down_entry, u)
                held = side_of_nb(c_pos)
                _, order = next_order_nb(held, breakout_up, bit_nb(down_exit, u), shorts and breakout_down, shorts and bit_nb(up_exit, u), size[u])
                if not np.isnan(order):
                    c_pend, c_from_flat = order, held == 0
                    if held == 0:  # the levels only an entry from flat takes
                        # `breakout_down & ~breakout_up` in the frame: a null (NaN) channel makes it False.
                        side_level = -1.0 if mirrored and breakout_down and not breakout_up else 1.0
                        cl, a = close[u], atr[u]
                        c_pstop = cl - side_level * s_mult * a
                        c_pt1 = cl + side_level * t1_mult * a
                        c_pt2 = cl + side_level * t2_mult * a
            cash[i], pos[i], pending[i], peak[i], dd[i] = c_cash, c_pos, c_pend, c_peak, c_dd
            phase[i], entry[i], count[i] = c_phase, c_entry, c_orders
            lv_stop[i], lv_t1[i], lv_t2[i] = c_stop, c_t1, c_t2
            p_stop[i], p_t1[i], p_t2[i], from_flat[i] = c_pstop, c_pt1, c_pt2, c_from_flat
    for i in range(m):
        k = c + i * chunks
        final[k] = cash[i] + pos[i] * close[n - 1]
        max_dd[k] = dd[i]
        orders[k] = count[i]


def channel_fast_sweep_nb(
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    up: np.ndarray,
    down: np.ndarray,
    atrs: np.ndarray,
    atr_row: np.ndarray,
    entry_row: np.ndarray,
    exit_row: np.ndarray,
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
    chunks: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k, as `channel_sweep_nb` gives
    them: its arguments, but the breakout bits (up, down) of the channel rows in place of the rows
    (`channel_bits_nb` or `breakout_bits_nb`, with `mirrors` True), the ATR rows before the channel
    rows' indices, and the number of chunks run in parallel. Open, high, low and close must be
    finite. A level's side is mirrored where the close breaks down and not up (`c <= high` when the
    high is not NaN)."""
    k_total = entry_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    with ThreadPoolExecutor(max(2, min(chunks, numba.get_num_threads()))) as pool:
        # The close's range tables and the lows' and highs' block tables side by side, then the chunks.
        tables_of = pool.submit(range_tables_nb, close)
        low_of, high_of = pool.submit(block_table_nb, low, False), pool.submit(block_table_nb, high, True)
        tables, low_min, high_max = tables_of.result(), low_of.result(), high_of.result()

        def run(c: int) -> None:
            _chunk_nb(
                fill_price, open_, high, low, close, up, down, atrs, atr_row, entry_row, exit_row, stop_mult, target1_mult, target2_mult,
                sizes, size_row, short_levels, short, brackets, fee, fee_bps, fee_per_share, slip, init_cash, whole, chunks, c,
                tables, low_min, high_max, final, max_dd, orders,
            )  # fmt: skip

        list(pool.map(run, range(chunks)))  # list: a chunk's exception raises here
    return final, max_dd, orders
