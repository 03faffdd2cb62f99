"""Cash, positions' market value and equity per bar, from a portfolio's order records.

What vectorbt's `Portfolio.cash()`, `asset_value(group_by=False)` and `value()` return for the
engine's portfolios (one group, shared cash), computed by the same vectorbt kernels in the same
order, so bit for bit the same numbers; without the pandas wrapping and copies around each call,
which cost more than the kernels on long runs. The per-symbol flows and positions come from
vectorbt's kernels; their sums across symbols, the cash and the values are one pass here
(`_book_nb`), adding as vectorbt's grouped sums add (from 0.0, symbols in column order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from vectorbt.portfolio import dispatch
from vectorbt.portfolio.enums import Direction
from vectorbt.utils.math_ import add_nb


@dataclass(frozen=True)
class BookValues:
    cash: np.ndarray  # (bars,) the shared cash balance
    held: np.ndarray  # (bars, symbols) each position's value at the close
    equity: np.ndarray  # (bars,) cash plus the positions

    @property
    def exposure(self) -> float:
        """Share of bars with any position."""
        return float(np.mean(np.any(np.abs(self.held) > 0, axis=1)))


def book_values(pf: Any) -> BookValues:
    """The per-bar values of a one-group, shared-cash vectorbt Portfolio (what the engine builds)."""
    if not pf.cash_sharing or len(pf.wrapper.grouper.get_group_lens()) != 1:
        raise ValueError("book_values needs one group with shared cash")
    shape = pf.wrapper.shape_2d
    orders, col_map = pf.orders.values, pf.orders.col_mapper.col_map

    flow = dispatch.cash_flow(shape, orders, col_map, False)
    init_cash = float(np.asarray(pf.init_cash, dtype=np.float64).ravel()[0])  # the one group's
    assets = dispatch.assets(dispatch.asset_flow(shape, orders, col_map, Direction.Both))
    close = np.asarray(pf.close, dtype=np.float64).reshape(shape)  # read only: flat positions are zeroed in _book_nb
    if pf.fillna_close and np.isnan(close).any():
        close = np.asarray(pf.get_filled_close(), dtype=np.float64).reshape(shape)
    cash, held, equity = _book_nb(flow, assets, close, init_cash)
    return BookValues(cash, held, equity)


@njit(cache=True, nogil=True)
def _book_nb(flow: np.ndarray, assets: np.ndarray, close: np.ndarray, init_cash: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared cash, each position's value and the equity per bar, in vectorbt's arithmetic: the
    bar's flows summed from 0.0 in column order (`sum_grouped_nb`), the cash carried with `add_nb`
    (`cash_grouped_nb`), a position valued at its close, a flat one at 0.0 whatever its price (NaN
    included), and the equity the cash plus the positions summed as the flows."""
    n, k = flow.shape
    cash = np.empty(n)
    held = np.empty((n, k))
    equity = np.empty(n)
    cash_now = init_cash
    for i in range(n):
        flow_sum = 0.0
        for c in range(k):
            flow_sum += flow[i, c]
        cash_now = add_nb(cash_now, flow_sum)
        cash[i] = cash_now
        value_sum = 0.0
        for c in range(k):
            price = 0.0 if assets[i, c] == 0 else close[i, c]
            held[i, c] = price * assets[i, c]
            value_sum += held[i, c]
        equity[i] = cash_now + value_sum
    return cash, held, equity
