"""The compiled sweep kernel for strategies that declare `strategies.base.CrossSectionalRank`.

Each distinct ranking (one per (lookback, skip) score) and each distinct volatility (one per window)
is computed once, outside, as (bar x symbol) arrays; a combination is (ranking row, top_k,
volatility row, vol_target, max_weight). Each combination is a whole universe with one shared cash
balance, simulated as the engine simulates it: the signals of a bar (entries into the top, exits out
of it, sized to the volatility target) decide the next bar's orders from the side the fills left,
and each bar's orders execute through the engine's own step (`backtests.order_sim._orders_of_bar_nb`:
the bar's equity once, exits before entries, entries by value then symbol, each sized by
`strategies.entries` within the free cash, filled by vectorbt's `process_order_nb` with fees,
slippage and whole or fractional shares). So a combination gives `run_backtest`'s orders and equity;
`tests/backtests/test_sweep_rank.py` checks every combination against it.

The combinations are dealt into chunks run on Python threads over a nogil compiled `_chunk_nb` (no
OpenMP worker spinning at a barrier), compiled as a `prange` body is (`error_model="numpy"`), its
arrays and its scratch (allocated by the caller, one set per chunk) read through unowned views
(`nb_intrinsics.unowned_nb`: no atomic reference count per bar's call).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit
from vectorbt.portfolio.enums import log_dt, order_dt

from backtests.kernels import next_order_nb, side_of_nb
from backtests.nb_intrinsics import unowned_nb
from backtests.order_sim import ENTRY, EXIT, NONE, _orders_of_bar_nb


@njit(cache=True, inline="always")
def _weight_nb(vol: float, vol_target: float, top_k: int, max_weight: float) -> float:
    """`CrossSectionalRank`'s size: vol_target / vol / top_k capped at max_weight where vol > 0,
    else NaN (no entry), in the strategy's order of operations (so the same bits)."""
    if not vol > 0.0:
        return np.nan
    return min(vol_target / vol / top_k, max_weight)


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
    fee_rate: float,
    fee_per_share: float,
    slippage: np.ndarray,
    init_cash: float,
    whole: bool,
    chunks: int,
    c: int,
    floats: np.ndarray,
    ints: np.ndarray,
    was_in: np.ndarray,
    order_records: np.ndarray,
    log_records: np.ndarray,
    final: np.ndarray,
    max_dd: np.ndarray,
    orders: np.ndarray,
) -> None:
    """`rank_sweep_nb`'s combinations c, c + chunks, ..., written at their index; `floats` (7 x m),
    `ints` (3 x m), `was_in` (m), `order_records` (m) and `log_records` (1): the chunk's scratch."""
    n, m = close.shape
    k_total = rank_row.shape[0]
    fill_price, close, ranks, vols, slippage = unowned_nb(fill_price), unowned_nb(close), unowned_nb(ranks), unowned_nb(vols), unowned_nb(slippage)
    floats, ints, was_in = unowned_nb(floats), unowned_nb(ints), unowned_nb(was_in)
    order_records, log_records, orders = unowned_nb(order_records), unowned_nb(log_records), unowned_nb(orders)
    position, debt, pending, fixed, amount, price, order_values = floats[0], floats[1], floats[2], floats[3], floats[4], floats[5], floats[6]
    kind, call_seq, sector = ints[0], ints[1], ints[2]
    granularity = 1.0 if whole else np.nan
    for k in range(c, k_total, chunks):
        rank = ranks[rank_row[k]]
        vol = vols[vol_row[k]]
        top, target, cap = top_k[k], vol_target[k], max_weight[k]
        # The engine's per-bar state for one group (no limits: `fixed` stays NaN, one sector).
        position[:] = 0.0
        debt[:] = 0.0
        pending[:] = np.nan
        fixed[:] = np.nan
        kind[:] = 0
        sector[:] = 0
        was_in[:] = False
        cash, free = init_cash, init_cash
        peak, dd, equity = init_cash, 0.0, init_cash
        for t in range(n):
            # The orders decided on the bar before, on the bar's equity at its fill prices.
            value, any_order = cash, False
            for col in range(m):
                kind[col], amount[col], price[col] = NONE, np.nan, fill_price[t, col]
                value += position[col] * fill_price[t, col]
                if not np.isnan(pending[col]):
                    kind[col] = ENTRY if pending[col] != 0 else EXIT
                    amount[col] = -position[col]
                    any_order = True
            if any_order:
                cash, free, filled, _ = _orders_of_bar_nb(
                    t, kind, amount, price, pending, fixed, value, position, debt, fill_price, fee_rate, fee_per_share,
                    slippage, granularity, whole, cash, free, 0, 0, order_values, call_seq, order_records, log_records,
                    False, 1.0, 1.0, sector,
                )  # fmt: skip
                orders[k] += filled
            equity = cash
            for col in range(m):
                equity += position[col] * close[t, col]
            peak = max(peak, equity)
            dd = max(dd, 1.0 - equity / peak)
            if t == n - 1:
                break
            # This bar's signals decide the next bar's orders (every symbol's, NaN: none), from the side the fills left.
            for col in range(m):
                in_top = 0 < rank[t, col] <= top
                size = _weight_nb(vol[t, col], target, top, cap)
                _, pending[col] = next_order_nb(side_of_nb(position[col]), in_top and not was_in[col], was_in[col] and not in_top, False, False, size)
                was_in[col] = in_top
        final[k] = equity
        max_dd[k] = dd


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
    """Final equity, max drawdown and order count per combination k, on (bar x symbol) prices:
    in the top where 0 < ranks[rank_row[k]] <= top_k[k] (0: no score), sized by
    `_weight_nb(vols[vol_row[k]], vol_target[k], top_k[k], max_weight[k])`. `slippage` is the
    engine's per (bar, symbol) fraction; `fee_per_share` is charged as a fraction of the unslipped price."""
    m = close.shape[1]
    k_total = rank_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    chunks = max(1, min(k_total, numba.get_num_threads()))

    def run(c: int) -> None:
        floats, ints = np.empty((7, m)), np.empty((3, m), dtype=np.int64)
        was_in, order_records, log_records = np.empty(m, dtype=np.bool_), np.empty(m, dtype=order_dt), np.empty(1, dtype=log_dt)
        _chunk_nb(
            fill_price, close, ranks, rank_row, top_k, vols, vol_row, vol_target, max_weight, fee_rate, fee_per_share, slippage,
            init_cash, whole, chunks, c, floats, ints, was_in, order_records, log_records, final, max_dd, orders,
        )  # fmt: skip

    with ThreadPoolExecutor(chunks) as pool:
        list(pool.map(run, range(chunks)))  # list: a chunk's exception raises here
    return final, max_dd, orders
