"""Walk-forward: folds tile the data, winners are the in-sample best, OOS equity chains the folds."""

from __future__ import annotations

import polars as pl
import pytest

from backtests.engine import BacktestConfig, BacktestError, run_backtest
from backtests.sweep import expand_grid, sweep
from backtests.walkforward import walk_forward
from strategies.builtin import RSI_REVERSION, SMA_CROSS, RsiReversionParams, SmaCrossParams


@pytest.mark.parametrize("mode", ["rolling", "anchored"])
def test_sma_walk_forward(mode: str, daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "AAPL")
    grid = list(SmaCrossParams.grid(fast=[3, 5, 8], slow=[15, 30]))
    config = BacktestConfig(fees_bps=1.0)
    wf = walk_forward(one, SMA_CROSS, grid, config, folds=4, is_bars=120, mode=mode)  # type: ignore[arg-type]
    assert wf.folds.height == 4
    oos_ts = wf.oos_equity["ts"]
    assert oos_ts.is_sorted() and oos_ts.n_unique() == oos_ts.len() == one.height - 120  # OOS segments tile the rest
    first = wf.folds.row(0, named=True)
    in_sample = one.filter(pl.col("ts") < first["oos_start"]).tail(120 if mode == "rolling" else 10_000)
    table = sweep(in_sample, SMA_CROSS, grid, config)
    best = table.sort("total_return", descending=True, maintain_order=True).row(0, named=True)
    assert (first["param_fast"], first["param_slow"]) == (best["fast"], best["slow"])
    # The stitched curve is the product of the folds' out-of-sample growth.
    growth = (wf.folds["oos_return"] + 1).product()
    assert wf.oos_equity["equity"][-1] == pytest.approx(config.init_cash * growth, rel=1e-9)
    assert set(wf.stability) == {"fast", "slow"} and all(0 < v <= 1 for v in wf.stability.values())


def test_out_of_sample_trades_only_inside_its_segment(daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "JPM")
    p = SMA_CROSS.params(fast=3, slow=15)
    start = one["ts"][200]
    result = run_backtest(one, SMA_CROSS, p, trade_from=start)
    assert result.orders.height > 0 and result.orders["ts"].min() > start
    assert (result.equity.filter(pl.col("ts") <= start)["equity"] == 100_000).all()


def test_generic_strategy_and_errors(daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "XOM")
    grid = list(RsiReversionParams.grid(period=[5, 14], lower=[30.0]))
    wf = walk_forward(one, RSI_REVERSION, grid, folds=3, objective="return_over_drawdown")
    assert wf.folds.height == 3 and wf.oos_equity.height == one.height - one.height // 4
    with pytest.raises(BacktestError, match="too few"):
        walk_forward(one.head(20), RSI_REVERSION, grid, folds=10)


@pytest.mark.parametrize("sizing", [{"sizing": "volatility", "vol_target": 0.02, "atr_period": 10}, {"sizing": "risk", "fraction": 0.5, "atr_period": 7}])
def test_walk_forward_keeps_every_field_of_the_chosen_parameters(sizing: dict[str, object], daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "JPM")
    config = BacktestConfig(fees_bps=2.0, slippage_bps=3.0, allow_short=True)
    grid = expand_grid(SMA_CROSS, sizing | {"allow_short": True}, {"fast": [3, 5], "slow": [15, 30]})
    wf = walk_forward(one, SMA_CROSS, grid, config, folds=3, is_bars=150)
    assert len(wf.chosen) == 3 and all(p in grid for p in wf.chosen)
    for field, value in sizing.items():
        assert wf.folds[f"param_{field}"].to_list() == [value] * 3
    # Each fold's winner is the in-sample best of the full-parameter sweep, and trades with those parameters.
    first = wf.folds.row(0, named=True)
    in_sample = one.filter(pl.col("ts") < first["oos_start"]).tail(150)
    table = sweep(in_sample, SMA_CROSS, grid, config)
    assert wf.chosen[0] == grid[int(table["total_return"].arg_max() or 0)]
    assert first["is_return"] == pytest.approx(float(table["total_return"].max()), rel=1e-12)  # type: ignore[arg-type]


def test_a_one_symbol_strategy_on_several_symbols_is_refused_by_name(daily_bars: pl.DataFrame) -> None:
    # Cross-sectional strategies walk forward on the universe: tests/backtests/test_walkforward_cross_sectional.py.
    with pytest.raises(BacktestError, match="sma_cross runs on one symbol at a time"):
        walk_forward(daily_bars, SMA_CROSS, [SMA_CROSS.params()], folds=2)
