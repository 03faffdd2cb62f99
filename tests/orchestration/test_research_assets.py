"""Research assets materialized in-process on an ingested lake: metrics as numbers, plots, files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from assets import research
from assets.resources import LakeResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions

SYMBOLS = ["AAPL", "MSFT"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    root: Path = tmp_path_factory.mktemp("lake")
    bars = SyntheticSource().fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root))


def _materialize(asset: dg.AssetsDefinition, lake: LakeResource, config: dict[str, object]) -> dg.MaterializeResult:
    result = dg.materialize(
        [asset],
        resources={"lake": lake},
        run_config={"ops": {asset.key.path[-1]: {"config": config}}},
        selection=[asset.key],
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    return event.materialization  # type: ignore[return-value]


BASE = {"symbols": SYMBOLS, "start": "2023-01-01", "end": "2025-01-01"}


def test_backtest_asset(lake: LakeResource) -> None:
    mat = _materialize(research.backtest, lake, BASE | {"params": {"fast": 5, "slow": 20}})
    meta = mat.metadata
    assert isinstance(meta["total_return"].value, float) and meta["orders"].value > 0
    assert "data:image/png;base64," in meta["equity_and_drawdown"].value  # type: ignore[operator]
    assert (lake.path / "research/backtest/report/equity_drawdown.png").is_file()
    assert (lake.path / "research/backtest/equity.parquet").is_file()


def test_sweep_walk_forward_and_monte_carlo_assets(lake: LakeResource) -> None:
    grid = {"fast": [3, 5, 8], "slow": [20, 40]}
    sweep = _materialize(research.parameter_sweep, lake, BASE | {"grid": grid}).metadata
    assert sweep["combinations"].value == 6 and "heatmap" in sweep
    wf = _materialize(research.walk_forward_analysis, lake, BASE | {"grid": grid, "folds": 3}).metadata
    assert isinstance(wf["oos_total_return"].value, float) and "oos_equity" in wf
    mc = _materialize(research.monte_carlo, lake, BASE | {"params": {"fast": 5, "slow": 20}, "paths": 500}).metadata
    assert 0.0 <= mc["ruin_probability"].value <= 1.0 and "fan_chart" in mc
