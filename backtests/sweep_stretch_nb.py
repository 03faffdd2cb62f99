"""What the event-to-event sweep kernels share (`sweep_threshold_fast_nb.py`, `sweep_channel_fast_nb.py`):
settle the marks of a stretch of bars held at one (cash, position) without visiting every bar, find
the next bar a signal can act on in a bitset, find the next bar a bracket level can be touched.

- `range_tables_nb`: block prefix/suffix extremes and a sparse table over blocks, so the lowest and
  highest value of any bar range is O(1) (plus at most BLOCK - 1 bars inside one block). Max and min
  are exact in any order, so the answer is the bytes a bar-by-bar pass would find.
- `mark_stretch_nb`: the peak and max drawdown after marking bars a..b bar by bar as
  `sweep_nb._mark_nb` does (equity = cash + pos x close): equity is monotone in the signed close, so
  the peak after the stretch is the mark of its highest close, and a stretch whose lowest mark under
  its highest peak cannot deepen the drawdown changes nothing else; one that makes no new peak
  deepens it to its lowest mark under the peak it started with; the others are walked from
  record close to record close (the worst drawdown under a record is the one at the lowest close
  after it), whole blocks with no new record skipped through their precomputed extremes.
- `block_table_nb`: that sparse table alone, of the lowest or the highest values.
- `next_bit_nb`: the first set bit at or after t in the OR of two bitsets, 64 bars a word.
- `first_touch_nb`: the first bar at or after a with low <= s or high >= h, by binary lifting over
  the blocks' extremes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 16  # bars per block of the range tables (a power of two)
SHIFT = 4  # log2(BLOCK)


@njit(cache=True, nogil=True)
def range_tables_nb(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prefix min, prefix max, suffix min, suffix max) of x inside each block, and the sparse tables
    (level k: the min / max of blocks i .. i + 2^k - 1) over the blocks. x must be finite."""
    n = x.shape[0]
    pmin, pmax, smin, smax = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for t in range(n):
        if (t & (BLOCK - 1)) == 0:
            pmin[t], pmax[t] = x[t], x[t]
        else:
            pmin[t], pmax[t] = min(pmin[t - 1], x[t]), max(pmax[t - 1], x[t])
    for t in range(n - 1, -1, -1):
        if t == n - 1 or ((t + 1) & (BLOCK - 1)) == 0:
            smin[t], smax[t] = x[t], x[t]
        else:
            smin[t], smax[t] = min(smin[t + 1], x[t]), max(smax[t + 1], x[t])
    return pmin, pmax, smin, smax, block_table_nb(x, False), block_table_nb(x, True)


@njit(cache=True, nogil=True)
def block_table_nb(x: np.ndarray, highest: bool) -> np.ndarray:
    """The sparse table over x's blocks of BLOCK bars, level k holding the lowest (highest: the
    highest) x of blocks i .. i + 2^k - 1; the last block may be partial. x must be finite."""
    n = x.shape[0]
    blocks = (n + BLOCK - 1) >> SHIFT
    levels = 1
    while (1 << levels) <= blocks:
        levels += 1
    table = np.empty((levels, blocks))
    for i in range(blocks):
        a = i << SHIFT
        v = x[a]
        for t in range(a + 1, min(n, a + BLOCK)):
            v = max(v, x[t]) if highest else min(v, x[t])
        table[0, i] = v
    for k in range(1, levels):
        half = 1 << (k - 1)
        for i in range(blocks - (1 << k) + 1):
            a, b = table[k - 1, i], table[k - 1, i + half]
            table[k, i] = max(a, b) if highest else min(a, b)
    return table


@njit(cache=True, inline="always")
def _log2_nb(m: int) -> int:
    k = 0
    while (2 << k) <= m:
        k += 1
    return k


@njit(cache=True, inline="always")
def range_nb(
    x: np.ndarray, pmin: np.ndarray, pmax: np.ndarray, smin: np.ndarray, smax: np.ndarray, spmin: np.ndarray, spmax: np.ndarray, a: int, b: int
) -> tuple[float, float]:
    """Lowest and highest x of bars a..b (a <= b)."""
    ba, bb = a >> SHIFT, b >> SHIFT
    if ba == bb:
        lo, hi = x[a], x[a]
        for t in range(a + 1, b + 1):
            lo = min(lo, x[t])
            hi = max(hi, x[t])
        return lo, hi
    lo, hi = min(smin[a], pmin[b]), max(smax[a], pmax[b])
    if bb - ba > 1:
        m = bb - ba - 1
        k = _log2_nb(m)
        i, j = ba + 1, bb - (1 << k)
        lo = min(lo, min(spmin[k, i], spmin[k, j]))
        hi = max(hi, max(spmax[k, i], spmax[k, j]))
    return lo, hi


@njit(cache=True, inline="always")
def _flush_nb(cash: float, q: float, peak: float, dd: float, top: float, low: float) -> tuple[float, float]:
    """Peak and max drawdown after the bars under one record: `top` the record's signed close, `low`
    the lowest signed close since; equity cash + q x signed close rises with it (q >= 0)."""
    peak = max(peak, cash + q * top)
    return peak, max(dd, 1.0 - (cash + q * low) / peak)


@njit(cache=True, inline="always")
def mark_stretch_nb(
    close: np.ndarray,
    pmin: np.ndarray,
    pmax: np.ndarray,
    smin: np.ndarray,
    smax: np.ndarray,
    spmin: np.ndarray,
    spmax: np.ndarray,
    a: int,
    b: int,
    cash: float,
    pos: float,
    peak: float,
    dd: float,
) -> tuple[float, float]:
    """The peak and max drawdown after marking bars a..b (a <= b) held at (cash, pos), as
    `sweep_nb._mark_nb` reaches them bar by bar. Equity is cash + |pos| x x, x the signed close
    (close for a long, -close for a short; pos x close == |pos| x x exactly), so it rises with x."""
    if pos == 0:
        equity = cash + pos * close[a]  # flat: the same mark on every bar (finite closes)
        peak = max(peak, equity)
        return peak, max(dd, 1.0 - equity / peak)
    sign = 1.0 if pos > 0 else -1.0
    q = pos * sign
    c_lo, c_hi = range_nb(close, pmin, pmax, smin, smax, spmin, spmax, a, b)
    x_lo, x_hi = (c_lo, c_hi) if sign > 0 else (-c_hi, -c_lo)
    top_peak = max(peak, cash + q * x_hi)
    lowest = cash + q * x_lo
    if lowest >= 0 and 1.0 - lowest / top_peak <= dd:
        # No bar here can deepen the drawdown: its equity is >= the lowest and its peak <= the top.
        return top_peak, dd
    if top_peak == peak:
        # No bar here makes a new peak: the deepest drawdown is the one at the lowest close.
        return peak, max(dd, 1.0 - lowest / peak)
    active, top, low = False, 0.0, 0.0
    t = a
    while t <= b:
        if active and (t & (BLOCK - 1)) == 0 and t + BLOCK - 1 <= b:
            hi, lo = (smax[t], smin[t]) if sign > 0 else (-smin[t], -smax[t])
            if hi <= top:  # no new record in this block: only its lowest value matters
                low = min(low, lo)
                t += BLOCK
                continue
        x = sign * close[t]
        if not active:
            top, low, active = x, x, True
        elif x > top:
            peak, dd = _flush_nb(cash, q, peak, dd, top, low)
            top, low = x, x
        elif x < low:
            low = x
        t += 1
    return _flush_nb(cash, q, peak, dd, top, low)


DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)  # every 6-bit window of it distinct: bit k's product tops out at a distinct index
_BIT_OF = np.zeros(64, dtype=np.int64)
for _k in range(64):
    _BIT_OF[((1 << _k) * 0x03F79D71B4CB0A89 % 2**64) >> 58] = _k


@njit(cache=True, inline="always")
def _lowest_bit_nb(word: np.uint64) -> int:
    """The index of the lowest set bit of a non-zero word (de Bruijn multiplication)."""
    lowest = word & (~word + np.uint64(1))
    return _BIT_OF[(lowest * DE_BRUIJN) >> np.uint64(58)]


@njit(cache=True, inline="always")
def next_bit_nb(a: np.ndarray, b: np.ndarray, t: int, stop: int) -> int:
    """The first bar in t..stop - 1 whose bit is set in a or b (uint64 words, bar t at bit t % 64 of
    word t // 64); `stop` if there is none."""
    if t >= stop:
        return stop
    w = t >> 6
    last = (stop - 1) >> 6
    word = (a[w] | b[w]) >> np.uint64(t & 63)
    if word != 0:
        return min(stop, t + _lowest_bit_nb(word))
    w += 1
    while w <= last:
        word = a[w] | b[w]
        if word != 0:
            return min(stop, (w << 6) + _lowest_bit_nb(word))
        w += 1
    return stop


@njit(cache=True, inline="always")
def set_bit_nb(bits: np.ndarray, t: int) -> None:
    bits[t >> 6] |= np.uint64(1) << np.uint64(t & 63)


@njit(cache=True, inline="always")
def bit_nb(bits: np.ndarray, t: int) -> bool:
    """Whether bar t's bit is set."""
    return (bits[t >> 6] >> np.uint64(t & 63)) & np.uint64(1) != 0


@njit(cache=True, inline="always")
def _hit_nb(lo: float, hi: float, s: float, h: float) -> bool:
    return lo <= s or hi >= h


@njit(cache=True, inline="always")
def first_touch_nb(low: np.ndarray, high: np.ndarray, spmin: np.ndarray, spmax: np.ndarray, a: int, b: int, s: float, h: float) -> int:
    """The first bar t in a..b with low[t] <= s or high[t] >= h (NaN levels never touch); b + 1 if
    none. spmin: block_table_nb(low, False), spmax: block_table_nb(high, True). A partial block's bars
    are read only when the whole block's extremes touch: most blocks do not, and the two partial
    blocks' bar-by-bar scans were most of the search."""
    t = a
    blk = a >> SHIFT
    if (t & (BLOCK - 1)) != 0:
        if _hit_nb(spmin[0, blk], spmax[0, blk], s, h):
            end = min(b, ((blk + 1) << SHIFT) - 1)
            while t <= end:
                if _hit_nb(low[t], high[t], s, h):
                    return t
                t += 1
        blk += 1
        if blk << SHIFT > b:
            return b + 1
    full = (b + 1) >> SHIFT  # blocks blk .. full - 1 lie inside a..b
    if blk < full and not _hit_nb(spmin[0, blk], spmax[0, blk], s, h):
        blk += 1
        for k in range(min(spmin.shape[0] - 1, _log2_nb(max(full - blk, 1))), -1, -1):
            if blk + (1 << k) <= full and not _hit_nb(spmin[k, blk], spmax[k, blk], s, h):
                blk += 1 << k
    t = blk << SHIFT
    if t > b or not _hit_nb(spmin[0, blk], spmax[0, blk], s, h):  # blk == full: the last, partial block's bars
        return b + 1
    while t <= b:
        if _hit_nb(low[t], high[t], s, h):
            return t
        t += 1
    return b + 1
