"""What every fused-sweep test asserts: each combination's row equals the engine's own run of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from strategies.base import Strategy


def assert_rows_equal_engine(
    table: pl.DataFrame, bars: pl.DataFrame, strategy: Strategy[Any], grid: Sequence[Any], config: BacktestConfig
) -> None:
    """Final equity and drawdown to 1e-9, orders exactly, in grid order; and every combination traded
    (a grid that never trades would compare nothing)."""
    assert table.height == len(grid)
    for p, row in zip(grid, table.iter_rows(named=True), strict=True):
        result = run_backtest(bars, strategy, p, config)
        assert row["final_equity"] == pytest.approx(result.equity["equity"][-1], rel=1e-9), p
        assert row["orders"] == result.orders.height, p
        assert row["max_drawdown"] == pytest.approx(result.metrics["max_drawdown"], rel=1e-9, abs=1e-12), p
    assert (table["orders"] > 0).all()
