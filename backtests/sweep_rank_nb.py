"""The compiled sweep kernel for strategies that declare `strategies.base.CrossSectionalRank`.

Each distinct ranking (one per (lookback, skip) score) and each distinct volatility (one per window)
is computed once, outside, as (bar x symbol) arrays; a combination is (ranking row, top_k,
volatility row, vol_target, max_weight). Each combination is a whole universe with one shared cash
balance, simulated as the engine simulates it: the signals of a bar (entries into the top, exits out
of it, sized to the volatility target) decide the next bar's orders from the side the fills left,
and each bar's orders execute in the engine's order (`backtests.order_sim._orders_of_bar_nb`: the
bar's equity once, exits before entries, entries by value then symbol, each sized by
`strategies.entries` within the free cash, filled by vectorbt's own order arithmetic with fees,
slippage and whole or fractional shares). So a combination gives `run_backtest`'s orders and equity;
`tests/backtests/test_sweep_rank.py` checks every combination against it.

What makes it cheaper than the engine's loop, with the same bits:
- the top's membership is one bit per symbol per bar; the bars where it changes (flips) and the
  symbols that entered or left there (`_flips_nb`) are found once per (ranking row, top_k) and
  shared by that pair's combinations, which go from flip to flip: a bar without one has no signal
  and no order, only its mark;
- only the held symbols are summed (a flat one adds 0.0, which leaves a float sum as it is; prices
  are finite), in symbol order, so every equity is the engine's sum;
- the max drawdown is taken from the lowest equity between two peaks (1 - e / peak falls as e
  rises, also in floats), not from a division per bar;
- a fill is vectorbt's `buy_nb` / `sell_nb` arithmetic on the state `execute_order_nb` would give
  them, the branches the engine's arguments never take left out (`_trade_nb`), and no order record;
- a chunk runs all its combinations over one block of bars before the next block (`BLOCK_CELLS`),
  so the block's prices are read from the core's cache, not from memory, by every combination.
The weights are positive (`vol_target` and `max_weight` > 0, the parameters' bounds), so every
position is long or flat and vectorbt's debt stays 0.

`rank_across_nb` is `strategies.base.rank_across` compiled, for the caller's rankings: the same
ranks as polars' (tested against it), without a window over ts per score.

The combinations are dealt into chunks run on Python threads over a nogil compiled `_chunk_nb` (no
OpenMP worker spinning at a barrier), compiled as a `prange` body is (`error_model="numpy"`), its
arrays and its scratch (allocated by the caller, one set per chunk) read through unowned views
(`nb_intrinsics.unowned_nb`: no atomic reference count per call).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit
from vectorbt.utils.math_ import add_nb, is_close_nb, is_close_or_less_nb, is_less_nb

from backtests.kernels import after_closing_nb, entry_shares_nb, free_cash_nb, next_order_nb, side_of_nb
from backtests.nb_intrinsics import trailing_zeros_nb, unowned_nb
from backtests.order_sim import MIN_SIZE

ONE = np.uint64(1)
BLOCK_CELLS = 4096  # (bar, symbol) cells per block of bars: a block's price arrays fit in a core's L2 cache
MIN_BLOCK = 16  # bars: with a wide universe, a block's per-combination overhead stays small


@njit(cache=True, inline="always")
def _weight_nb(vol: float, vol_target: float, top_k: int, max_weight: float) -> float:
    """`CrossSectionalRank`'s size: vol_target / vol / top_k capped at max_weight where vol > 0,
    else NaN (no entry), in the strategy's order of operations (so the same bits)."""
    if not vol > 0.0:
        return np.nan
    return min(vol_target / vol / top_k, max_weight)


@njit(cache=True, inline="always")
def _above_nb(a: float, b: float) -> bool:
    """a ranks above b as polars sorts descending: the greater first, NaN above every number,
    -0.0 equal to 0.0."""
    return (a > b) | (np.isnan(a) & (not np.isnan(b)))  # bitwise: no branch


@njit(cache=True, inline="always")
def _merge_nb(score: np.ndarray, t: int, src: np.ndarray, dst: np.ndarray, lo: int, mid: int, hi: int) -> None:
    """The sorted runs src[lo:mid] and src[mid:hi] into dst[lo:hi], the left run's first on a tie."""
    i, j = lo, mid
    for k in range(lo, hi):
        if i < mid and (j >= hi or not _above_nb(score[src[j], t], score[src[i], t])):
            dst[k] = src[i]
            i += 1
        else:
            dst[k] = src[j]
            j += 1


@njit(cache=True, nogil=True)
def rank_across_nb(score: np.ndarray, known: np.ndarray, out: np.ndarray) -> None:
    """`strategies.base.rank_across` on a universe's score, symbol-major (score[col, t], `known`
    False where the score is null): out[t, col] the rank of score[col, t] among bar t's known
    scores (1 the highest, NaN above every number, ties by column, as polars' ordinal rank), 0 where
    unknown. Up to 16 symbols each rank is counted, without a branch (one plus the known scores
    above it and the equal ones before it); more are sorted (stable bottom-up merges)."""
    m, n = score.shape
    order, spare = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    row, ok = np.empty(m), np.empty(m, dtype=np.int64)
    for t in range(n):
        if m <= 16:
            for col in range(m):
                row[col], ok[col] = score[col, t], known[col, t]
            for a in range(m):
                rank, s_a = 1, row[a]
                for b in range(m):
                    before = (_above_nb(row[b], s_a) & (b > a)) | ((not _above_nb(s_a, row[b])) & (b < a))
                    rank += ok[b] & before
                out[t, a] = rank * ok[a]
            continue
        k = 0
        for col in range(m):
            out[t, col] = 0
            if known[col, t]:
                order[k] = col
                k += 1
        src, dst = order, spare
        width = 1
        while width < k:
            for lo in range(0, k, 2 * width):
                _merge_nb(score, t, src, dst, lo, min(lo + width, k), min(lo + 2 * width, k))
            src, dst = dst, src
            width *= 2
        for r in range(k):
            out[t, src[r]] = r + 1


@njit(cache=True, nogil=True, error_model="numpy")
def _flips_nb(
    rank: np.ndarray, top: int, t0: int, t1: int, before: np.ndarray, now: np.ndarray, flip_bar: np.ndarray, flips: np.ndarray
) -> int:
    """The bars of t0..t1 - 1 before the last bar whose top (0 < rank <= top, one bit per symbol: bit
    col % 64 of word col // 64) differs from the bar before's (`before`: that bar's words, updated;
    the first bar's come from an empty top): flip_bar[e] the bar, flips[e, 0] the symbols that
    entered, flips[e, 1] those that left. Returns how many; `now`: scratch words."""
    n, m = rank.shape
    count = 0
    for t in range(t0, min(t1, n - 1)):
        for w in range(now.shape[0]):
            now[w] = 0
        for col in range(m):  # without a branch: membership is as likely as not
            r = rank[t, col]
            now[col >> 6] |= np.uint64((r > 0) & (r <= top)) << np.uint64(col & 63)
        changed = False
        for w in range(now.shape[0]):
            changed = changed or now[w] != before[w]
        if changed:
            flip_bar[count] = t
            for w in range(now.shape[0]):
                flips[count, 0, w] = now[w] & ~before[w]
                flips[count, 1, w] = before[w] & ~now[w]
                before[w] = now[w]
            count += 1
    return count


@njit(cache=True, inline="always")
def _signals_nb(
    flips: np.ndarray, t: int, vol: np.ndarray, target: float, top: int, cap: float, position: np.ndarray, pending: np.ndarray,
    exits: np.ndarray, entries: np.ndarray,
) -> tuple[int, int]:
    """A flip's signals (`flips`: its entered and left words) on bar t as `next_order_nb` reads them
    (a symbol whose membership did not flip has none: no order): pending[col] set for each order (a
    weight, 0 an exit), its column in `exits` or `entries` (in column order); how many of each."""
    n_exits, n_entries = 0, 0
    for w in range(flips.shape[1]):
        entered, left = flips[0, w], flips[1, w]
        while entered:
            col = w * 64 + np.int64(trailing_zeros_nb(entered))
            entered &= entered - ONE
            held = side_of_nb(position[col])
            if held == 1:
                continue  # already long: no order (`next_order_nb`'s, without computing a size)
            _, order = next_order_nb(held, True, False, False, False, _weight_nb(vol[t, col], target, top, cap))
            if not np.isnan(order):
                pending[col] = order
                entries[n_entries] = col
                n_entries += 1
        while left:
            col = w * 64 + np.int64(trailing_zeros_nb(left))
            left &= left - ONE
            _, order = next_order_nb(side_of_nb(position[col]), False, True, False, False, np.nan)
            if not np.isnan(order):
                pending[col] = order
                exits[n_exits] = col
                n_exits += 1
    return n_exits, n_entries


@njit(cache=True, inline="always")
def _sort_nb(values: np.ndarray, seq: np.ndarray, count: int) -> None:
    """vectorbt's `insert_argsort_nb` on the first `count` items: by value, ties in their order."""
    for j in range(1, count):
        a_j, i_j = values[j], seq[j]
        i = j - 1
        while i >= 0 and (values[i] > a_j or np.isnan(values[i])):
            values[i + 1], seq[i + 1] = values[i], seq[i]
            i -= 1
        values[i + 1], seq[i + 1] = a_j, i_j


@njit(cache=True, inline="always")
def _buy_nb(cash: float, position: float, size: float, price: float, fee: float, slip: float, granularity: float) -> tuple[float, float, bool]:
    """vectorbt's `buy_nb` as the engine calls it (an amount, both directions, no fixed fee, no cash
    lock, partial fills allowed, `MIN_SIZE`), on a long or flat position: the same operations in
    the same order, the branches those arguments never take left out."""
    adj_price = price * (1 + slip)
    if cash == 0:
        return cash, position, False  # no cash
    adj_size = size
    if not np.isnan(granularity):
        adj_size = adj_size // granularity * granularity
    req_cash = adj_size * adj_price
    req_fees = req_cash * fee + 0.0
    total_req_cash = req_cash + req_fees
    if is_close_or_less_nb(total_req_cash, cash):
        final_size, final_req_cash = adj_size, total_req_cash
    else:  # the cash caps it
        max_req_cash = add_nb(cash, -0.0) / (1 + fee)
        if max_req_cash <= 0:
            return cash, position, False
        max_acq_size = max_req_cash / adj_price
        if not np.isnan(granularity):
            final_size = max_acq_size // granularity * granularity
            new_req_cash = final_size * adj_price
            final_req_cash = new_req_cash + (new_req_cash * fee + 0.0)
        else:
            final_size, final_req_cash = max_acq_size, cash
    if is_close_nb(adj_size, 0) or is_less_nb(final_size, MIN_SIZE):
        return cash, position, False
    return add_nb(cash, -final_req_cash), add_nb(position, final_size), True


@njit(cache=True, inline="always")
def _sell_nb(cash: float, position: float, size: float, price: float, fee: float, slip: float, granularity: float) -> tuple[float, float, bool]:
    """vectorbt's `sell_nb` as `_buy_nb` is its `buy_nb`, selling at most the long position held."""
    adj_price = price * (1 - slip)
    size_limit = size
    if not np.isnan(granularity):
        size_limit = size_limit // granularity * granularity
    if is_close_nb(size_limit, 0) or is_less_nb(size_limit, MIN_SIZE):
        return cash, position, False
    acq_cash = size_limit * adj_price
    fees_paid = acq_cash * fee + 0.0
    final_acq_cash = add_nb(acq_cash, -fees_paid)
    if final_acq_cash < 0:
        return cash, position, False
    return cash + final_acq_cash, add_nb(position, -size_limit), True


@njit(cache=True, inline="always")
def _trade_nb(cash: float, position: float, delta: float, price: float, fee: float, slip: float, granularity: float) -> tuple[float, float, bool]:
    """`delta` shares at `price` as the engine's `process_order_nb` trades them: `execute_order_nb`'s
    near-zero state snapped to 0, then `_buy_nb` or `_sell_nb` (a sell never exceeds the long
    position held: exits only). Cash, position, filled."""
    cash = 0.0 if is_close_nb(cash, 0.0) else cash
    position = 0.0 if is_close_nb(position, 0.0) else position
    if delta > 0:
        return _buy_nb(cash, position, delta, price, fee, slip, granularity)
    return _sell_nb(cash, position, -delta, price, fee, slip, granularity)


@njit(cache=True, inline="always")
def _hold_nb(held: np.ndarray, h: int, col: int, was: float, now: float) -> int:
    """The held columns (sorted, h of them) after col's position went from `was` to `now`."""
    if was == 0 and now != 0:
        i = h
        while i > 0 and held[i - 1] > col:
            held[i] = held[i - 1]
            i -= 1
        held[i] = col
        return h + 1
    if was != 0 and now == 0:
        i = 0
        while held[i] != col:
            i += 1
        for j in range(i, h - 1):
            held[j] = held[j + 1]
        return h - 1
    return h


@njit(cache=True, inline="always")
def _entry_delta_nb(
    t: int, col: int, cash: float, value: float, wanted: float, position: np.ndarray, held: np.ndarray, h: int,
    fill_price: np.ndarray, fee: float, slip: float, whole: bool,
) -> float:
    """An entry's amount as `_orders_of_bar_nb` sizes it: `wanted` of the bar's equity, at most the
    free cash now (the equity now less the other positions' gross value, both summed in column order)."""
    side = 1 if wanted > 0 else -1
    mark = fill_price[t, col]
    fill = mark * (1.0 + side * slip)
    equity_now, others_gross = cash, 0.0
    for i in range(h):
        j = held[i]
        value_j = position[j] * fill_price[t, j]
        equity_now += value_j
        if j != col:
            others_gross += abs(value_j)
    left = after_closing_nb(equity_now, position[col], side, fill, mark, fee, 0.0)
    room = free_cash_nb(left, others_gross)
    available = after_closing_nb(value, position[col], side, fill, mark, fee, 0.0)
    shares = entry_shares_nb(available, abs(wanted), fill, fee, 0.0, whole, room)
    return side * shares - position[col]


@njit(cache=True, inline="always")
def _orders_nb(
    t: int, n_exits: int, n_entries: int, exits: np.ndarray, entries: np.ndarray, pending: np.ndarray, position: np.ndarray,
    held: np.ndarray, h: int, fill_price: np.ndarray, slippage: np.ndarray, fee: np.ndarray, granularity: float, whole: bool,
    cash: float, values: np.ndarray,
) -> tuple[float, int, int]:
    """Bar t's orders in `_orders_of_bar_nb`'s order: the exits, then the entries (`pending`: their
    weights), each by value then column (one sort of both, read exits first, orders each part the
    same). Cash, held count, fills."""
    value = cash  # the bar's equity at its fill prices, before any fill
    if n_entries:
        for i in range(h):
            value += position[held[i]] * fill_price[t, held[i]]
    for i in range(n_exits):
        values[i] = -position[exits[i]] * fill_price[t, exits[i]]
    _sort_nb(values, exits, n_exits)
    fills = 0
    for i in range(n_exits):
        col = exits[i]
        was = position[col]
        if was == 0:  # -0.0 shares: nothing to trade
            continue
        cash, position[col], filled = _trade_nb(cash, was, -was, fill_price[t, col], fee[t, col], slippage[t, col], granularity)
        fills += filled
        h = _hold_nb(held, h, col, was, position[col])
    for i in range(n_entries):
        values[i] = pending[entries[i]] * value - position[entries[i]] * fill_price[t, entries[i]]
    _sort_nb(values, entries, n_entries)
    for i in range(n_entries):
        col = entries[i]
        delta = _entry_delta_nb(t, col, cash, value, pending[col], position, held, h, fill_price, fee[t, col], slippage[t, col], whole)
        if delta == 0 or np.isnan(delta):
            continue
        was = position[col]
        cash, position[col], filled = _trade_nb(cash, was, delta, fill_price[t, col], fee[t, col], slippage[t, col], granularity)
        fills += filled
        h = _hold_nb(held, h, col, was, position[col])
    return cash, h, fills


@njit(cache=True, nogil=True, error_model="numpy")
def _advance_nb(
    t0: int, t1: int, flip_bar: np.ndarray, flips: np.ndarray, n_flips: int, fill_price: np.ndarray, close: np.ndarray,
    vol: np.ndarray, top: int, target: float, cap: float, fee: np.ndarray, slippage: np.ndarray, whole: bool,
    position: np.ndarray, pending: np.ndarray, values: np.ndarray, held: np.ndarray, exits: np.ndarray, entries: np.ndarray,
    marks: np.ndarray, counts: np.ndarray,
) -> None:
    """One combination over bars t0..t1 - 1 (their flips given), from flip to flip. Its state:
    `position`, `pending`, `held`, `exits`, `entries` (per symbol), `marks` (cash, peak, the lowest
    equity since it (inf: none yet), the max drawdown before it, the last equity) and `counts` (held
    symbols, exits and entries to fill on bar t0, fills)."""
    granularity = 1.0 if whole else np.nan
    cash, peak, low, dd, equity = marks[0], marks[1], marks[2], marks[3], marks[4]
    h, n_exits, n_entries, fills = counts[0], counts[1], counts[2], counts[3]
    t = t0
    for e in range(n_flips + 1):
        f = flip_bar[e] if e < n_flips else t1 - 1  # bars t..f have no signal but bar f's
        if t > f:
            break  # the block's last bar flipped: its orders fill in the next block
        if n_exits or n_entries:  # the orders decided on the bar before
            cash, h, filled = _orders_nb(
                t, n_exits, n_entries, exits, entries, pending, position, held, h, fill_price, slippage, fee, granularity, whole,
                cash, values,
            )  # fmt: skip
            fills += filled
            n_exits, n_entries = 0, 0
        for u in range(t, f + 1):
            equity = cash
            for i in range(h):
                equity += position[held[i]] * close[u, held[i]]
            if equity > peak:
                if low < np.inf:
                    dd = max(dd, 1.0 - low / peak)
                peak, low = equity, np.inf
            elif equity < low:
                low = equity
        if e == n_flips:
            break
        n_exits, n_entries = _signals_nb(flips[e], f, vol, target, top, cap, position, pending, exits, entries)
        t = f + 1
    marks[0], marks[1], marks[2], marks[3], marks[4] = cash, peak, low, dd, equity
    counts[0], counts[1], counts[2], counts[3] = h, n_exits, n_entries, fills


@njit(cache=True, nogil=True, error_model="numpy")
def _chunk_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    ranks: np.ndarray,
    rank_row: np.ndarray,
    top_k: np.ndarray,
    vols: np.ndarray,
    vol_row: np.ndarray,
    vol_target: np.ndarray,
    max_weight: np.ndarray,
    fee: np.ndarray,
    slippage: np.ndarray,
    init_cash: float,
    whole: bool,
    combos: np.ndarray,
    block: int,
    words: np.ndarray,
    flip_bar: np.ndarray,
    flips: np.ndarray,
    floats: np.ndarray,
    ints: np.ndarray,
    marks: np.ndarray,
    counts: np.ndarray,
    final: np.ndarray,
    max_dd: np.ndarray,
    orders: np.ndarray,
) -> None:
    """`rank_sweep_nb`'s combinations `combos` (those sharing a ranking row and top_k next to each
    other: a group), written at their index: all of them over one block of bars, then the next, so
    a block's prices stay in the core's cache. A group's flips are found once per block. Scratch
    (the caller's, one set per chunk): `words` (groups + 1 x words: each group's top before the
    block, then the bar's), `flip_bar` (block), `flips` (block x 2 x words), per combination
    `floats` (3 x m: position, pending, a sort's values), `ints` (3 x m: held, exits, entries),
    `marks` (5) and `counts` (4)."""
    fill_price, close, ranks, vols, slippage = unowned_nb(fill_price), unowned_nb(close), unowned_nb(ranks), unowned_nb(vols), unowned_nb(slippage)
    fee, words, flip_bar, flips = unowned_nb(fee), unowned_nb(words), unowned_nb(flip_bar), unowned_nb(flips)
    floats, ints, marks, counts = unowned_nb(floats), unowned_nb(ints), unowned_nb(marks), unowned_nb(counts)
    n = close.shape[0]
    size = combos.shape[0]
    words[:] = 0
    floats[:, 0] = 0.0
    counts[:] = 0
    for q in range(size):
        marks[q, 0], marks[q, 1], marks[q, 2], marks[q, 3], marks[q, 4] = init_cash, init_cash, np.inf, 0.0, init_cash
    for t0 in range(0, n, block):
        t1 = min(n, t0 + block)
        i, g = 0, 0
        while i < size:
            k = combos[i]
            j = i + 1
            while j < size and rank_row[combos[j]] == rank_row[k] and top_k[combos[j]] == top_k[k]:
                j += 1
            n_flips = _flips_nb(ranks[rank_row[k]], top_k[k], t0, t1, words[g], words[size], flip_bar, flips)
            for q in range(i, j):
                kq = combos[q]
                _advance_nb(
                    t0, t1, flip_bar, flips, n_flips, fill_price, close, vols[vol_row[kq]], top_k[kq], vol_target[kq], max_weight[kq],
                    fee, slippage, whole, floats[q, 0], floats[q, 1], floats[q, 2], ints[q, 0], ints[q, 1], ints[q, 2], marks[q], counts[q],
                )  # fmt: skip
            i, g = j, g + 1
    for q in range(size):
        peak, low, dd = marks[q, 1], marks[q, 2], marks[q, 3]
        if low < np.inf:
            dd = max(dd, 1.0 - low / peak)
        final[combos[q]], max_dd[combos[q]], orders[combos[q]] = marks[q, 4], dd, counts[q, 3]


def _deal(rank_row: np.ndarray, top_k: np.ndarray, chunks: int) -> list[np.ndarray]:
    """The combinations of each chunk: those sharing (ranking row, top_k) kept together in pieces of
    at most a quarter of a chunk's share (so one big group still spreads), dealt round robin."""
    order = np.lexsort((top_k, rank_row))
    piece = max(1, len(order) // (4 * chunks))
    units: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        last = end == len(order)
        if last or end - start == piece or (rank_row[order[end]], top_k[order[end]]) != (rank_row[order[start]], top_k[order[start]]):
            units.append(order[start:end])
            start = end
    return [np.concatenate([np.empty(0, dtype=np.int64), *units[c::chunks]]).astype(np.int64) for c in range(chunks)]


def rank_sweep_nb(
    fill_price: np.ndarray,
    close: np.ndarray,
    ranks: np.ndarray,
    rank_row: np.ndarray,
    top_k: np.ndarray,
    vols: np.ndarray,
    vol_row: np.ndarray,
    vol_target: np.ndarray,
    max_weight: np.ndarray,
    fee_rate: float,
    fee_per_share: float,
    slippage: np.ndarray,
    init_cash: float,
    whole: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final equity, max drawdown and order count per combination k, on (bar x symbol) finite prices:
    in the top where 0 < ranks[rank_row[k]] <= top_k[k] (0: no score), sized by
    `_weight_nb(vols[vol_row[k]], vol_target[k], top_k[k], max_weight[k])` (vol_target and
    max_weight > 0: long only). `slippage` is the engine's per (bar, symbol) fraction;
    `fee_per_share` is charged as a fraction of the unslipped price."""
    if not (np.all(vol_target > 0) and np.all(max_weight > 0)):
        raise ValueError("rank_sweep_nb: vol_target and max_weight must be > 0 (long-only weights)")
    n, m = close.shape
    k_total = rank_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    chunks = max(1, min(k_total, numba.get_num_threads()))
    dealt = _deal(rank_row, top_k, chunks)
    # The engine's fee fraction per (bar, symbol), by the same two operations: one division per cell, not per order.
    fee = fee_rate + fee_per_share / fill_price

    block = max(MIN_BLOCK, BLOCK_CELLS // max(m, 1))
    w = (m + 63) // 64

    def run(c: int) -> None:
        size = dealt[c].shape[0]
        words, flip_bar, flips = np.empty((size + 1, w), dtype=np.uint64), np.empty(block, dtype=np.int64), np.empty((block, 2, w), dtype=np.uint64)
        floats, ints = np.empty((size, 3, m)), np.empty((size, 3, m), dtype=np.int64)
        marks, counts = np.empty((size, 5)), np.empty((size, 4), dtype=np.int64)
        _chunk_nb(
            fill_price, close, ranks, rank_row, top_k, vols, vol_row, vol_target, max_weight, fee, slippage, init_cash, whole,
            dealt[c], block, words, flip_bar, flips, floats, ints, marks, counts, final, max_dd, orders,
        )  # fmt: skip

    with ThreadPoolExecutor(chunks) as pool:
        list(pool.map(run, range(chunks)))  # list: a chunk's exception raises here
    return final, max_dd, orders
