"""Walk-forward of a cross-sectional strategy on its universe: each fold's winner is the in-sample
best over the universe, its out-of-sample segment is the engine's run of the universe with shared
cash, and nothing after a bar reaches a choice or a decision made before it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets import research
from assets.resources import LakeResource
from backtests.engine import BacktestConfig, BacktestError, run_backtest
from backtests.sweep import expand_grid, sweep
from backtests.walkforward import WalkForwardResult, walk_forward
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from strategies.builtin import MOMENTUM, MomentumParams

SYMBOLS = ["AAPL", "JPM", "MSFT", "XOM", "NVDA"]
CONFIG = BacktestConfig(fees_bps=2.0, slippage_bps=1.0)
GRID = expand_grid(MOMENTUM, {"vol_target": 0.3, "max_weight": 0.5}, {"lookback": [10, 30, 60], "skip": [0, 2], "top_k": [1, 2, 3]})
FOLDS, IS_BARS = 4, 150
WARMUP = max(MOMENTUM.lookback(p) for p in GRID)  # the documented warm-up: the grid's longest


@pytest.fixture(scope="module")
def universe() -> pl.DataFrame:
    """Two years of daily bars for five symbols (501 shared timestamps)."""
    return SyntheticSource(seed=3).fetch(SYMBOLS, "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def run(bars: pl.DataFrame, mode: str = "rolling") -> WalkForwardResult:
    return walk_forward(bars, MOMENTUM, GRID, CONFIG, folds=FOLDS, is_bars=IS_BARS, mode=mode)  # type: ignore[arg-type]


def trended(bars: pl.DataFrame, symbol: str, start: datetime, rate: float) -> pl.DataFrame:
    """`symbol`'s prices from `start` on multiplied by exp(rate x bars since start): a future-only change."""
    since = pl.col("ts").rank("dense").over(pl.col("ts") >= start) - 1
    factor = pl.when((pl.col("symbol") == symbol) & (pl.col("ts") >= start)).then((since * rate).exp()).otherwise(1.0)
    return bars.with_columns(*(pl.col(c) * factor for c in ("open", "high", "low", "close")))


@pytest.mark.parametrize("mode", ["rolling", "anchored"])
def test_out_of_sample_equity_is_the_engine_run_of_the_chosen_parameters(mode: str, universe: pl.DataFrame) -> None:
    wf = run(universe, mode)
    ts = universe["ts"].unique().sort()
    assert wf.folds.height == FOLDS and wf.oos_equity["ts"].to_list() == ts[IS_BARS:].to_list()  # segments tile the rest
    level = CONFIG.init_cash
    symbols_traded: set[str] = set()
    for k, fold in enumerate(wf.folds.iter_rows(named=True)):
        start = int(ts.search_sorted(fold["oos_start"]))
        window = universe.filter(pl.col("ts").is_between(ts[start - WARMUP], fold["oos_end"]))
        engine = run_backtest(window, MOMENTUM, wf.chosen[k], CONFIG, trade_from=fold["oos_start"])
        segment = engine.equity.filter(pl.col("ts") >= fold["oos_start"])
        stitched = wf.oos_equity.filter(pl.col("ts").is_between(fold["oos_start"], fold["oos_end"]))
        assert stitched["ts"].to_list() == segment["ts"].to_list()
        np.testing.assert_allclose(stitched["equity"].to_numpy(), level * segment["equity"].to_numpy() / CONFIG.init_cash, rtol=1e-9)
        assert engine.orders["ts"].min() > fold["oos_start"]  # decided from its first bar on, filled at t+1
        symbols_traded |= set(engine.orders["symbol"].to_list())
        level *= float(segment["equity"][-1]) / CONFIG.init_cash
    assert len(symbols_traded) > 1  # one book over the universe, not one symbol
    # Fold 0's winner is the in-sample best of the engine's own run of each combination on the universe.
    first = wf.folds.row(0, named=True)
    in_sample = universe.filter(pl.col("ts") < first["oos_start"])
    returns = [float(run_backtest(in_sample, MOMENTUM, p, CONFIG).equity["equity"][-1]) / CONFIG.init_cash - 1 for p in GRID]
    assert wf.chosen[0] == GRID[int(np.argmax(returns))]
    assert first["is_return"] == pytest.approx(max(returns), rel=1e-9)


def test_a_future_only_change_leaves_the_choices_and_the_past_alone(universe: pl.DataFrame) -> None:
    before = run(universe)
    ts = universe["ts"].unique().sort()
    start = ts[IS_BARS + 87 + 40]  # inside fold 1's out-of-sample segment (87 bars a segment)
    fold = before.folds.row(1, named=True)
    assert fold["oos_start"] < start < fold["oos_end"]
    changed = trended(universe, "JPM", start, 0.02)
    after = run(changed)
    # Folds that chose before the change chose the same; what was decided before it is unchanged.
    assert after.chosen[:2] == before.chosen[:2]
    assert after.folds["is_return"][:2].to_list() == before.folds["is_return"][:2].to_list()
    past = pl.col("ts") < start
    assert after.oos_equity.filter(past)["equity"].to_list() == before.oos_equity.filter(past)["equity"].to_list()
    # The change matters: the equity after it moves, and fold 1's choice would move had it seen its own segment.
    assert after.oos_equity.filter(~past)["equity"].to_list() != before.oos_equity.filter(~past)["equity"].to_list()
    seen = sweep(changed.filter(pl.col("ts").is_between(fold["is_start"], fold["oos_end"])), MOMENTUM, GRID, CONFIG)
    assert GRID[int(np.argmax(seen["total_return"].to_numpy()))] != before.chosen[1]


def test_winners_and_in_sample_returns_are_the_rank_sweeps(universe: pl.DataFrame) -> None:
    wf = run(universe)
    ts = universe["ts"].unique().sort()
    for k, fold in enumerate(wf.folds.iter_rows(named=True)):
        start = int(ts.search_sorted(fold["oos_start"]))
        table = sweep(universe.filter(pl.col("ts").is_between(ts[start - IS_BARS], ts[start - 1])), MOMENTUM, GRID, CONFIG)
        best = int(table["total_return"].arg_max() or 0)
        assert isinstance(wf.chosen[k], MomentumParams) and wf.chosen[k] == GRID[best]
        assert fold["is_return"] == float(table["total_return"][best])


def test_the_research_asset_walks_the_universe_forward(universe: pl.DataFrame, tmp_path: Path) -> None:
    replace_partitions(tmp_path, "bars", "1d", universe, period="year")
    config = {"strategy": MOMENTUM.name, "symbols": SYMBOLS, "start": "2022-01-01", "end": "2024-01-01", "fees_bps": 2.0, "slippage_bps": 1.0}
    config |= {"params": {"vol_target": 0.3, "max_weight": 0.5}, "grid": {"lookback": [10, 30, 60], "skip": [0, 2], "top_k": [1, 2, 3]}, "folds": FOLDS, "is_bars": IS_BARS}
    result = dg.materialize([research.walk_forward_analysis], resources={"lake": LakeResource(root=str(tmp_path))}, run_config={"ops": {"walk_forward_analysis": {"config": config}}})
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert str(event.materialization.metadata["symbols"].value) == ", ".join(sorted(SYMBOLS))
    folds = pl.read_parquet(tmp_path / "research/walk_forward_analysis/folds.parquet")
    assert folds.equals(run(universe).folds)  # the same walk as on the frame


def test_a_universe_whose_symbols_do_not_share_every_bar_is_refused_by_name(universe: pl.DataFrame) -> None:
    gap = universe.filter(~((pl.col("symbol") == "XOM") & (pl.col("ts") == universe["ts"].unique().sort()[300])))
    with pytest.raises(BacktestError, match="must share every bar: XOM has 500 of 501 timestamps"):
        run(gap)
