"""Cash, positions' market value and equity per bar, from a portfolio's order records.

What vectorbt's `Portfolio.cash()`, `asset_value(group_by=False)` and `value()` return for the
engine's portfolios (one group, shared cash), computed by the same vectorbt kernels in the same
order, so bit for bit the same numbers; without the pandas wrapping and copies around each call,
which cost more than the kernels on long runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from vectorbt.portfolio import dispatch
from vectorbt.portfolio.enums import Direction


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
    group_lens = np.asarray(pf.wrapper.grouper.get_group_lens(), dtype=np.int64)

    flow = dispatch.cash_flow_grouped(dispatch.cash_flow(shape, orders, col_map, False), group_lens)
    init_cash = np.asarray(pf.init_cash, dtype=np.float64).ravel()  # per group
    cash = dispatch.cash_grouped(shape, flow, group_lens, init_cash)

    assets = dispatch.assets(dispatch.asset_flow(shape, orders, col_map, Direction.Both))
    close = np.array(pf.close, dtype=np.float64).reshape(shape)  # a copy: flat positions are zeroed below
    if pf.fillna_close and np.isnan(close).any():
        close = np.array(pf.get_filled_close(), dtype=np.float64).reshape(shape)
    close[assets == 0] = 0.0  # a NaN price on a flat position is worth nothing, as in vectorbt
    held = dispatch.asset_value(close, assets)
    equity = dispatch.value(cash, dispatch.asset_value_grouped(held, group_lens))
    return BookValues(cash.ravel(), held, equity.ravel())
