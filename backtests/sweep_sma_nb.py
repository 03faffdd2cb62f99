"""The SMA-cross sweep kernel: `sweep_fused_nb.ma_cross_sweep_nb`'s rules, when the declared average
is `strategies.indicators.sma` (the exact windowed mean of the close).

Why it is faster while giving the same numbers:
- the means are computed here, a block of bars at a time, for every window at once: one fold per
  window start gives the sums of every window length from it (`window_sums_nb` adds each window
  from its oldest bar, so the sum of window w ending at t is the fold from t - w + 1 after w
  values); no (window x bar) array exists, and each block of means is read by every combination
  while it is in cache;
- a combination jumps from crossing to crossing (the bars between change nothing but the marks),
  found eight flags to a word from the word's lowest set bit;
- the marks between crossings are not computed bar by bar: equity is cash + position x close, a
  monotone function of the close, so the peak after a stretch is the mark of its highest close; a
  stretch whose highest mark stays under the peak leaves it, its deepest drawdown at its lowest
  close, and one whose lowest mark under its highest peak cannot deepen the drawdown changes nothing
  else (most of them: the lowest and highest close from the precomputed ranges of the whole spans
  of SPAN bars inside and the bars around them); the others (rare) are walked record to record (the
  worst drawdown under a record close is the one at the lowest close after it), skipping spans of
  closes with no new record through their precomputed max and min;
- the chunks of combinations run on threads, not under numba's OpenMP `prange`, whose worker done
  first spins at the barrier until the other ends (on a shared machine a third of the CPU time).
`tests/backtests/test_sweep_sma.py` checks it bit for bit against `ma_cross_sweep_nb` and the engine.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from backtests.kernels import next_order_nb, side_of_nb
from backtests.nb_intrinsics import trailing_zeros_nb
from backtests.sweep_nb import _fill_nb

BLOCK = 1024  # bars per pass: every window's means for a block (~0.5 MB for 65 windows) stay in cache
LANES = 256  # window starts folded side by side (SIMD lanes, as window_sums_nb's blocks)
SPAN = 32  # closes per precomputed max/min


@njit(cache=True, nogil=True)
def block_means_nb(x: np.ndarray, windows: np.ndarray, t0: int, t1: int, out: np.ndarray, acc: np.ndarray) -> None:
    """out[i, j] = the mean of the windows[i] values of x ending at bar t0 - 1 + j, for j <= t1 - t0,
    summed from the oldest value as `window_sums_nb` (then / window); NaN where the window would
    start before bar 0. `windows` sorted ascending; acc: LANES scratch values."""
    first_end = t0 - 1
    out[:, : t1 - first_end] = np.nan
    w_max = windows[-1]
    for a0 in range(max(0, first_end - w_max + 1), t1, LANES):
        lanes = min(LANES, t1 - a0)
        for i in range(lanes):
            acc[i] = x[a0 + i]
        wi = 0
        for length in range(1, w_max + 1):
            live = min(lanes, t1 - a0 - length + 1)  # lanes whose window still ends inside the block
            if live <= 0:
                break
            if length > 1:
                xs = x[a0 + length - 1 : a0 + length - 1 + live]  # slices: indices from 0, no negative-index test, so SIMD lanes
                for i in range(live):
                    acc[i] += xs[i]
            if length == windows[wi]:
                base = a0 + length - 1 - first_end
                lo = max(0, -base)
                row = out[wi, base + lo : base + live]
                for i in range(live - lo):
                    row[i] = acc[lo + i] / length
                wi += 1


@njit(cache=True, inline="always")
def _crosses_nb(fast: np.ndarray, slow: np.ndarray, j: int) -> tuple[bool, bool]:
    """(up, down) at buffer index j: crossed above / below since j - 1; a NaN compares False."""
    up = fast[j] > slow[j] and fast[j - 1] <= slow[j - 1]
    down = fast[j] < slow[j] and fast[j - 1] >= slow[j - 1]
    return up, down


@njit(cache=True, inline="always")
def _cross_flags_nb(fast: np.ndarray, slow: np.ndarray, end: int, flags: np.ndarray) -> None:
    """flags[j] = 1 where buffer index j (1 <= j < end) crosses either way, 0 elsewhere; no branch,
    so the compares run in SIMD lanes."""
    flags[0] = 0
    flags[end:] = 0
    for i in range(1, end):
        flags[i] = ((fast[i] > slow[i]) & (fast[i - 1] <= slow[i - 1])) | ((fast[i] < slow[i]) & (fast[i - 1] >= slow[i - 1]))


@njit(cache=True, inline="always")
def _next_flag_nb(flags: np.ndarray, words: np.ndarray, j: int, end: int) -> int:
    """The first index in [j, end) whose flag is set, eight flags at a time where none is; `end` if none."""
    while j < end:
        if j % 8 == 0 and words[j // 8] == 0:
            j += 8
        elif flags[j]:
            return j
        else:
            j += 1
    return end


@njit(cache=True, inline="always")
def _flush_nb(cash: float, q: float, peak: float, dd: float, top: float, low: float) -> tuple[float, float]:
    """Peak and max drawdown after the bars under one record: `top` the record's signed close, `low`
    the lowest signed close since; equity cash + q x signed close rises with it (q >= 0)."""
    peak = max(peak, cash + q * top)
    return peak, max(dd, 1.0 - (cash + q * low) / peak)


@njit(cache=True, fastmath=True)
def _range_nb(close: np.ndarray, span_hi: np.ndarray, span_lo: np.ndarray, a: int, b: int) -> tuple[float, float]:
    """Lowest and highest close of bars a..b, the whole spans inside from their precomputed range
    (finite closes: max and min are exact in any order, so the reductions may run in SIMD lanes)."""
    lo, hi = close[a], close[a]
    s0, s1 = (a + SPAN - 1) // SPAN, (b + 1) // SPAN  # the whole spans s0..s1 - 1
    head = b  # the bars read one by one from a
    if s1 - s0 >= 2:  # the whole spans from their ranges, the bars around them one by one
        head = s0 * SPAN - 1
        for s in range(s0, s1):
            lo = min(lo, span_lo[s])
            hi = max(hi, span_hi[s])
        for t in range(s1 * SPAN, b + 1):
            lo = min(lo, close[t])
            hi = max(hi, close[t])
    for t in range(a + 1, head + 1):
        lo = min(lo, close[t])
        hi = max(hi, close[t])
    return lo, hi


@njit(cache=True)
def _walk_nb(
    close: np.ndarray, span_hi: np.ndarray, span_lo: np.ndarray, a: int, b: int, cash: float, q: float, sign: float, peak: float, dd: float
) -> tuple[float, float]:
    """`_mark_nb` of a held stretch that may deepen the drawdown, walked record to record (rare: a
    function of its own, so the common path stays small)."""
    active, top, low = False, 0.0, 0.0
    t = a
    while t <= b:
        if active and t % SPAN == 0 and t + SPAN - 1 <= b:
            s = t // SPAN
            hi, lo = (span_hi[s], span_lo[s]) if sign > 0 else (-span_lo[s], -span_hi[s])
            if hi <= top:  # no new record in this span: only its lowest value matters
                low = min(low, lo)
                t += SPAN
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


@njit(cache=True, inline="always")
def _mark_nb(
    close: np.ndarray, span_hi: np.ndarray, span_lo: np.ndarray, a: int, b: int, cash: float, pos: float, peak: float, dd: float
) -> tuple[float, float]:
    """The peak and max drawdown after marking bars a..b held at (cash, pos), as `_mark_nb` of
    sweep_nb would reach them bar by bar. Equity is cash + |pos| x x, x the signed close (close for a
    long, -close for a short; pos x close == |pos| x x exactly), so it rises with x."""
    if pos == 0:
        equity = cash + pos * close[a]  # flat: the same mark on every bar
        peak = max(peak, equity)
        return peak, max(dd, 1.0 - equity / peak)
    sign = 1.0 if pos > 0 else -1.0
    q = pos * sign
    c_lo, c_hi = _range_nb(close, span_hi, span_lo, a, b)
    x_lo, x_hi = (c_lo, c_hi) if sign > 0 else (-c_hi, -c_lo)
    top_peak = max(peak, cash + q * x_hi)
    lowest = cash + q * x_lo
    if top_peak == peak:
        # No bar's mark passes the peak: it stays, and the deepest drawdown is the lowest mark's.
        return peak, max(dd, 1.0 - lowest / peak)
    if lowest >= 0 and 1.0 - lowest / top_peak <= dd:
        # No bar here can deepen the drawdown: its equity is >= the lowest and its peak <= the top.
        return top_peak, dd
    return _walk_nb(close, span_hi, span_lo, a, b, cash, q, sign, peak, dd)


@njit(cache=True, nogil=True)
def _chunk_nb(
    x: np.ndarray,
    windows: np.ndarray,
    fill_price: np.ndarray,
    close: np.ndarray,
    fast_row: np.ndarray,
    slow_row: np.ndarray,
    sizes: np.ndarray,
    size_row: np.ndarray,
    short: np.ndarray,
    fee: np.ndarray,
    slip: float,
    init_cash: float,
    whole: bool,
    chunks: int,
    c: int,
    span_hi: np.ndarray,
    span_lo: np.ndarray,
    final: np.ndarray,
    max_dd: np.ndarray,
    orders: np.ndarray,
) -> None:
    """Combinations c, c + chunks, ... (each chunk a mix of cheap and busy ones), a block of bars at
    a time: their final equity, max drawdown and order count written at their index."""
    n, k_total = close.shape[0], fast_row.shape[0]
    means = np.empty((windows.shape[0], BLOCK + 1))
    acc = np.empty(LANES)
    flags = np.zeros(BLOCK + 8, dtype=np.uint8)
    words = flags.view(np.uint64)
    m = (k_total - c + chunks - 1) // chunks
    cash, pos, pending = np.full(m, init_cash), np.zeros(m), np.full(m, np.nan)
    peak, dd = np.full(m, init_cash), np.zeros(m)
    for t0 in range(0, n, BLOCK):
        t1 = min(t0 + BLOCK, n)
        block_means_nb(x, windows, t0, t1, means, acc)
        decide_end = min(t1, n - 1) - t0 + 1  # buffer index bound: orders are decided before the last bar
        last_word = (decide_end - 1) // 8
        for i in range(m):
            k = c + i * chunks
            fast, slow, size = means[fast_row[k]], means[slow_row[k]], sizes[size_row[k]]
            _cross_flags_nb(fast, slow, decide_end, flags)
            c_cash, c_pos, c_pend, c_peak, c_dd = cash[i], pos[i], pending[i], peak[i], dd[i]
            t = t0
            # buffer index j is bar t0 - 1 + j (index 0 of the first block, bar -1, is NaN: no cross on bar 0);
            # the flags are read eight to a word, each crossing found from its word's lowest set bit
            wi, w = 0, words[0]
            while True:
                while w == 0 and wi < last_word:
                    wi += 1
                    w = words[wi]
                crossed = w != 0
                if crossed:
                    j = wi * 8 + trailing_zeros_nb(w) // 8
                    w &= w - np.uint64(1)
                    e = t0 - 1 + j
                else:  # the bars after the block's last crossing
                    e = t1 - 1
                    if t > e:
                        break
                if not np.isnan(c_pend):  # the order decided on the bar before fills now
                    c_cash, c_pos, filled = _fill_nb(c_cash, c_pos, c_pend, fill_price[t], fee[t], slip, whole)
                    orders[k] += filled
                    c_pend = np.nan
                c_peak, c_dd = _mark_nb(close, span_hi, span_lo, t, e, c_cash, c_pos, c_peak, c_dd)
                t = e + 1
                if not crossed:
                    break
                up, down = _crosses_nb(fast, slow, j)
                _, c_pend = next_order_nb(side_of_nb(c_pos), up, down, down and short[k], up and short[k], size[e])
            cash[i], pos[i], pending[i], peak[i], dd[i] = c_cash, c_pos, c_pend, c_peak, c_dd
    for i in range(m):
        k = c + i * chunks
        final[k] = cash[i] + pos[i] * close[n - 1]
        max_dd[k] = dd[i]


@njit(cache=True, nogil=True)
def span_ranges_nb(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The highest and lowest close of each SPAN bars."""
    n = close.shape[0]
    spans = (n + SPAN - 1) // SPAN
    span_hi = np.empty(spans)
    span_lo = np.empty(spans)
    for s in range(spans):
        part = close[s * SPAN : min(n, (s + 1) * SPAN)]
        span_hi[s] = part.max()
        span_lo[s] = part.min()
    return span_hi, span_lo


def sma_cross_sweep_nb(
    x: np.ndarray,
    windows: np.ndarray,
    fill_price: np.ndarray,
    close: np.ndarray,
    fast_row: np.ndarray,
    slow_row: np.ndarray,
    sizes: np.ndarray,
    size_row: np.ndarray,
    short: np.ndarray,
    fee: np.ndarray,
    slip: float,
    init_cash: float,
    whole: bool,
    chunks: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k: the cross of the mean of x over
    windows[fast_row[k]] bars over the one over windows[slow_row[k]] bars, entries sized by
    sizes[size_row[k]], shorts when short[k]; `ma_cross_sweep_nb`'s numbers. Combinations are dealt
    into `chunks`, each compiled `_chunk_nb` on a thread of its own (it releases the GIL). Threads,
    not a numba `prange`: under OpenMP the worker done first spins at the barrier until the other
    ends, which on a shared machine was a third of the sweep's CPU time."""
    k_total = fast_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    span_hi, span_lo = span_ranges_nb(close)

    def run(c: int) -> None:
        _chunk_nb(x, windows, fill_price, close, fast_row, slow_row, sizes, size_row, short, fee, slip, init_cash, whole, chunks, c, span_hi, span_lo, final, max_dd, orders)

    if chunks == 1:
        run(0)
    else:
        with ThreadPoolExecutor(chunks) as pool:
            list(pool.map(run, range(chunks)))  # list: a chunk's exception raises here
    return final, max_dd, orders
