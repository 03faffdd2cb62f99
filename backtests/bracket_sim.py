"""Bracket runs on vectorbt's order-function simulation.

`Portfolio.from_orders` cannot say "cover half the short actually held" (a Percent buy is a share of
cash), and a long half exit as a long-only Percent order breaks on a leftover short. So bracket runs
go through `Portfolio.from_order_func`, reproducing `from_orders` step for step: every bar values
each column at its order price, sorts the bar's orders sells-first by approximate value (cash
sharing's "auto" call sequence), then executes them; HALF_POSITION orders become an amount — half
the position held at that moment, on the bracket's side, rounded down to whole shares unless
fractional — and nothing when the position is not on that side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from vectorbt.portfolio import nb as vnb
from vectorbt.portfolio.enums import Direction, SizeType

from backtests.kernels import HALF_POSITION

MIN_SIZE = 1e-8  # from_orders' default (vectorbt settings): smaller fills, e.g. 0 whole shares, are ignored


@njit(cache=True)
def _resolve_half_nb(side: float, position: float, whole_shares: bool) -> float:
    """The signed amount that takes half of `position` off, if it is on `side`; else NaN."""
    if position * side <= 0:
        return np.nan
    half = abs(position) * 0.5
    if whole_shares:
        half = np.floor(half)
    if half <= 0:
        return np.nan
    return -np.sign(position) * half


@njit(cache=True)
def _pre_segment_nb(
    c: Any,
    size: np.ndarray,
    size_type: np.ndarray,
    price: np.ndarray,
    whole_shares: bool,
    size_now: np.ndarray,
    type_now: np.ndarray,
    order_value: np.ndarray,
) -> tuple[()]:
    i = c.i
    for col in range(c.from_col, c.to_col):
        c.last_val_price[col] = price[i, col]  # as from_orders: value each column at its order price
        s, t = size[i, col], size_type[i, col]
        if t == HALF_POSITION and not np.isnan(s):
            s, t = _resolve_half_nb(s, c.last_position[col], whole_shares), SizeType.Amount
        size_now[col], type_now[col] = s, t
    value = c.last_cash[c.group]
    for col in range(c.from_col, c.to_col):
        if c.last_position[col] != 0:
            value += c.last_position[col] * c.last_val_price[col]
    for k in range(c.group_len):
        col = c.from_col + k
        order_value[k] = vnb.approx_order_value_nb(
            size_now[col], int(type_now[col]), Direction.Both, c.last_cash[c.group], c.last_position[col],
            c.last_free_cash[c.group], c.last_val_price[col], value,
        )
    vnb.insert_argsort_nb(order_value[: c.group_len], c.call_seq_now)
    return ()


@njit(cache=True)
def _order_nb(
    c: Any,
    price: np.ndarray,
    fees: np.ndarray,
    slippage: np.ndarray,
    granularity: float,
    size_now: np.ndarray,
    type_now: np.ndarray,
) -> Any:
    return vnb.order_nb(
        size=size_now[c.col],
        price=price[c.i, c.col],
        size_type=int(type_now[c.col]),
        direction=Direction.Both,
        fees=fees[c.i, c.col],
        slippage=slippage[c.i, c.col],
        min_size=MIN_SIZE,
        size_granularity=granularity,
    )


def simulate_brackets(
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
    """A vectorbt Portfolio (shared cash, one group) from bracket_orders_nb's orders."""
    import vectorbt as vbt

    n_cols = size.shape[1]
    size_now = np.full(n_cols, np.nan)
    type_now = np.zeros(n_cols)
    order_value = np.empty(n_cols)
    return vbt.Portfolio.from_order_func(
        close,
        _order_nb,
        np.ascontiguousarray(price, dtype=np.float64),
        np.ascontiguousarray(fees, dtype=np.float64),
        np.ascontiguousarray(slippage, dtype=np.float64),
        np.nan if fractional else 1.0,
        size_now,
        type_now,
        pre_segment_func_nb=_pre_segment_nb,
        pre_segment_args=(
            np.ascontiguousarray(size, dtype=np.float64),
            np.ascontiguousarray(size_type, dtype=np.float64),
            np.ascontiguousarray(price, dtype=np.float64),
            not fractional,
            size_now,
            type_now,
            order_value,
        ),
        init_cash=init_cash,
        cash_sharing=True,
        group_by=True,
        call_seq="default",
        freq=freq,
    )
