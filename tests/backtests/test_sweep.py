"""Sweeps: every combination equals a full engine backtest of that combination."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, BacktestError, run_backtest
from backtests.sweep import sweep, sweep_sma_cross
from strategies.builtin import RSI_REVERSION, SMA_CROSS, RsiReversionParams

CONFIGS = [
    BacktestConfig(fees_bps=3.0, fee_per_share=0.005),
    BacktestConfig(fees_bps=1.0, slippage_bps=5.0, allow_short=True),
    BacktestConfig(fractional=True, fill="next_close"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["fees", "long_short_slippage", "fractional_close"])
def test_fused_sma_sweep_equals_engine_per_combination(config: BacktestConfig, daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "JPM")
    table = sweep_sma_cross(one, fast=[3, 5, 8, 13], slow=[10, 21, 34], config=config, fraction=0.9)
    assert table.height == 4 * 3 - 1  # 13 >= 10 is skipped
    for row in table.iter_rows(named=True):
        p = SMA_CROSS.params(fast=row["fast"], slow=row["slow"], fraction=0.9, allow_short=config.allow_short)
        result = run_backtest(one, SMA_CROSS, p, config)
        assert row["final_equity"] == pytest.approx(result.equity["equity"][-1], rel=1e-9)
        assert row["orders"] == result.orders.height
        assert row["max_drawdown"] == pytest.approx(result.metrics["max_drawdown"], rel=1e-9, abs=1e-12)
    assert table["orders"].min() > 0


def test_generic_sweep_equals_engine_per_combination(daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "XOM")
    config = BacktestConfig(fees_bps=2.0, allow_short=True)
    grid = list(RsiReversionParams.grid(period=[5, 10, 14], lower=[25.0, 35.0], allow_short=[True]))
    seen: list[int] = []
    table = sweep(one, RSI_REVERSION, grid, config, progress=lambda done, total: seen.append(done))
    assert seen == [len(grid)]
    for p, row in zip(grid, table.iter_rows(named=True), strict=True):
        result = run_backtest(one, RSI_REVERSION, p, config)
        assert row["final_equity"] == pytest.approx(result.equity["equity"][-1], rel=1e-9)
        assert row["orders"] == result.orders.height
    assert np.unique(table["final_equity"].to_numpy()).size > 1


def test_sweep_errors_are_named(daily_bars: pl.DataFrame) -> None:
    with pytest.raises(BacktestError, match="one symbol at a time"):
        sweep_sma_cross(daily_bars, [5], [20])
    one = daily_bars.filter(pl.col("symbol") == "XOM")
    with pytest.raises(BacktestError, match="no valid"):
        sweep_sma_cross(one, [30], [20])
    with pytest.raises(BacktestError, match="empty parameter grid"):
        sweep(one, RSI_REVERSION, [])
