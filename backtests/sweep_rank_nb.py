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
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from vectorbt.portfolio.enums import log_dt, order_dt

from backtests.kernels import next_order_nb, side_of_nb
from backtests.order_sim import ENTRY, EXIT, NONE, _orders_of_bar_nb


@njit(cache=True, inline="always")
def _weight_nb(vol: float, vol_target: float, top_k: int, max_weight: float) -> float:
    """`CrossSectionalRank`'s size: vol_target / vol / top_k capped at max_weight where vol > 0,
    else NaN (no entry), in the strategy's order of operations (so the same bits)."""
    if not vol > 0.0:
        return np.nan
    return min(vol_target / vol / top_k, max_weight)


@njit(cache=True, parallel=True)
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
    n, m = close.shape
    k_total = rank_row.shape[0]
    final = np.empty(k_total)
    max_dd = np.empty(k_total)
    orders = np.zeros(k_total, dtype=np.int64)
    granularity = 1.0 if whole else np.nan
    for k in prange(k_total):
        rank = ranks[rank_row[k]]
        vol = vols[vol_row[k]]
        top, target, cap = top_k[k], vol_target[k], max_weight[k]
        # The engine's per-bar state for one group (no limits: `fixed` stays NaN, one sector).
        position, debt = np.zeros(m), np.zeros(m)
        pending, fixed = np.full(m, np.nan), np.full(m, np.nan)
        kind, amount, price = np.zeros(m, dtype=np.int64), np.empty(m), np.empty(m)
        order_values, call_seq, sector = np.empty(m), np.empty(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
        order_records, log_records = np.empty(m, dtype=order_dt), np.empty(1, dtype=log_dt)  # one bar's orders
        was_in = np.zeros(m, dtype=np.bool_)
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
    return final, max_dd, orders
