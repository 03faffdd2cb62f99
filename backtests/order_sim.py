"""Every backtest's orders: vectorbt's order processing in our own compiled loop.

`Portfolio.from_orders` cannot size an entry by our rule (`strategies/entries.py`: the closing
trade's fee and slippage paid first, then `size` of the equity left over the price with its fee; a
TargetPercent reversal sizes on the equity before the closing fee and puts the entry fee on top), nor
say "cover half the short actually held" (a Percent buy is a share of cash). So every run goes
through this loop, which reproduces `from_orders` step for step around vectorbt's own
`process_order_nb` — every bar values each column at its order price, sorts the bar's orders
sells-first by approximate value (cash sharing's "auto" call sequence), then executes them (a buy
capped by the cash there is) — except for two order types of ours, both resolved to an amount from
the state at that bar: ENTRY (size: the signed weight) trades to side x `entry_shares` of the
equity left after closing an opposite position (the bar's value, taken once before its orders, less
that closing trade's fee and slippage); HALF_POSITION becomes half the position held at that moment,
on the bracket's side, rounded down to whole shares unless fractional, and nothing when the position
is not on that side. The records make an ordinary vectorbt Portfolio. (`from_order_func` could do
the same but compiles its simulator anew in every process, ~4 s; this loop is cached like the
other kernels.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from vectorbt.portfolio import nb as vnb
from vectorbt.portfolio.enums import Direction, ProcessOrderState, SizeType, log_dt, order_dt

from backtests.kernels import ENTRY, HALF_POSITION, entry_amount_nb, half_exit_nb

MIN_SIZE = 1e-8  # from_orders' default (vectorbt settings): smaller fills, e.g. 0 whole shares, are ignored


@njit(cache=True)
def simulate_orders_nb(
    size: np.ndarray,
    size_type: np.ndarray,
    price: np.ndarray,
    fees: np.ndarray,
    slippage: np.ndarray,
    init_cash: float,
    whole_shares: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Order and log records for one cash-sharing group, as `simulate_from_orders_nb` makes them."""
    n, m = size.shape
    order_records = np.empty(n * m, dtype=order_dt)
    log_records = np.empty(1, dtype=log_dt)
    position = np.zeros(m)
    debt = np.zeros(m)
    val_price = np.full(m, np.nan)
    size_now = np.empty(m)
    type_now = np.empty(m, dtype=np.int64)
    order_value = np.empty(m)
    call_seq = np.empty(m, dtype=np.int64)
    granularity = 1.0 if whole_shares else np.nan
    cash, free_cash, oidx, lidx = init_cash, init_cash, 0, 0
    for i in range(n):
        for col in range(m):
            if not np.isnan(price[i, col]):  # valued at the order price; forward-filled when missing
                val_price[col] = price[i, col]
        value = cash
        for col in range(m):
            if position[col] != 0:
                value += position[col] * val_price[col]
        for col in range(m):
            s, t = size[i, col], size_type[i, col]
            if t == HALF_POSITION:
                if not np.isnan(s):
                    s = half_exit_nb(position[col], int(s), whole_shares)
                    s = s if s != 0 else np.nan  # nothing on the bracket's side: no order
                t = SizeType.Amount
            order_value[col] = vnb.approx_order_value_nb(s, t, Direction.Both, cash, position[col], free_cash, val_price[col], value)
            if t == ENTRY:
                # Sorted as the TargetPercent order it replaces (weight x value less the value held),
                # so that entries of equal weight tie exactly and go by column, not by the last bit.
                order_value[col] = s * value - position[col] * val_price[col]
                if not np.isnan(s):
                    s = entry_amount_nb(s, position[col], value, price[i, col], fees[i, col], slippage[i, col], whole_shares)
                    s = s if s != 0 else np.nan  # already there: no order
                t = SizeType.Amount
            size_now[col], type_now[col] = s, t
            call_seq[col] = col
        vnb.insert_argsort_nb(order_value, call_seq)  # sells first, to free cash for the buys
        for k in range(m):
            col = call_seq[k]
            order = vnb.order_nb(
                size=size_now[col],
                price=price[i, col],
                size_type=type_now[col],
                direction=Direction.Both,
                fees=fees[i, col],
                slippage=slippage[i, col],
                min_size=MIN_SIZE,
                size_granularity=granularity,
            )
            state = ProcessOrderState(cash, position[col], debt[col], free_cash, val_price[col], value, oidx, lidx)
            _, state = vnb.process_order_nb(i, col, 0, state, False, order, order_records, log_records)
            cash, position[col], debt[col], free_cash = state.cash, state.position, state.debt, state.free_cash
            value, oidx, lidx = state.value, state.oidx, state.lidx
            if not np.isnan(state.val_price):
                val_price[col] = state.val_price
    return order_records[:oidx], log_records[:lidx]


def simulate_orders(
    close: Any,
    size: np.ndarray,
    size_type: np.ndarray,
    price: np.ndarray,
    fees: np.ndarray,
    slippage: np.ndarray,
    *,
    init_cash: float,
    fractional: bool,
    freq: str,
) -> Any:
    """A vectorbt Portfolio (shared cash, one group) from orders as (size, size type, price) arrays:
    vectorbt's size types, ENTRY or HALF_POSITION."""
    import vectorbt as vbt
    from vectorbt.base.array_wrapper import ArrayWrapper

    def f64(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float64)

    orders, logs = simulate_orders_nb(
        f64(size), np.ascontiguousarray(size_type, dtype=np.int64), f64(price), f64(fees), f64(slippage), init_cash, not fractional
    )
    wrapper = ArrayWrapper.from_obj(close, freq=freq, group_by=True)
    return vbt.Portfolio(wrapper, close, orders, logs, np.array([init_cash]), True)
