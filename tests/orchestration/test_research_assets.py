"""Research assets materialized in-process on an ingested lake: metrics as numbers, plots, files."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import research
from assets.resources import LakeResource
from backtests.engine import BacktestConfig, run_backtest
from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars, replace_partitions
from strategies.builtin import SMA_CROSS

SYMBOLS = ["AAPL", "MSFT"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    root: Path = tmp_path_factory.mktemp("lake")
    bars = SyntheticSource().fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root))


def _materialize(asset: dg.AssetsDefinition, lake: LakeResource, config: dict[str, object]) -> dg.AssetMaterialization:
    result = dg.materialize(
        [asset],
        resources={"lake": lake},
        run_config={"ops": {asset.key.path[-1]: {"config": config}}},
        selection=[asset.key],
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    return event.materialization


def _number(value: dg.MetadataValue) -> float:
    assert isinstance(value.value, int | float)
    return float(value.value)


BASE = {"symbols": SYMBOLS, "start": "2023-01-01", "end": "2025-01-01"}


def test_backtest_asset(lake: LakeResource) -> None:
    mat = _materialize(research.backtest, lake, BASE | {"params": {"fast": 5, "slow": 20}})
    meta = mat.metadata
    assert isinstance(meta["total_return"].value, float) and _number(meta["orders"]) > 0
    assert "data:image/png;base64," in str(meta["equity_and_drawdown"].value)
    assert (lake.path / "research/backtest/report/equity_drawdown.png").is_file()
    assert (lake.path / "research/backtest/equity.parquet").is_file()


def test_backtest_records_what_produced_it_rounded_for_people_exact_in_the_files(lake: LakeResource) -> None:
    import json

    meta = _materialize(research.backtest, lake, BASE | {"params": {"fast": 5, "slow": 20}}).metadata
    assert meta["strategy"].value == "sma_cross" and meta["symbols"].value == "AAPL, MSFT" and meta["timeframe"].value == "1d"
    params = meta["params"].value
    assert isinstance(params, dict) and (params["fast"], params["slow"]) == (5, 20) and "sizing" in params
    assert str(meta["range"].value).startswith("2023-01-03 ") and "bars)" in str(meta["range"].value)
    exact = json.loads((lake.path / "research/backtest/metrics.json").read_text())
    assert _number(meta["total_return"]) == round(exact["total_return"], 4) != exact["total_return"]
    assert research._title("sma_cross", {"fast": 5, "slow": 20}, read_bars(lake.path, SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 2, 1, tzinfo=UTC))) == "sma_cross fast=5 slow=20 on AAPL,MSFT"


def test_launchpads_scaffold_parameters_symbols_and_grid_with_their_defaults() -> None:
    from dagster._config.pythonic_config import infer_schema_from_config_class

    def defaults(config: type[dg.Config]) -> dict[str, object]:
        fields = infer_schema_from_config_class(config).config_type.fields  # type: ignore[attr-defined]
        return {name: f.default_value for name, f in fields.items() if f.default_provided}

    backtest = defaults(research.ResearchConfig)
    assert backtest["params"] == {"fast": SMA_CROSS.params().fast, "slow": SMA_CROSS.params().slow}
    assert backtest["symbols"] and backtest["strategy"] == "sma_cross" and backtest["fees_bps"] == 1.0
    sweep = defaults(research.SweepConfig)
    assert sweep["grid"] == SMA_CROSS.params_model.sweep_ranges() and sweep["params"] == {}


def test_an_untouched_scaffold_with_another_strategy_counts_as_unset(lake: LakeResource) -> None:
    """Choosing donchian_breakout and leaving sma_cross's scaffolded fast/slow: its own defaults, not a refusal."""
    from strategies.builtin import DONCHIAN_BREAKOUT

    meta = _materialize(research.backtest, lake, BASE | {"strategy": "donchian_breakout"}).metadata
    assert meta["params"].value == DONCHIAN_BREAKOUT.params().model_dump()
    sweep = _materialize(research.parameter_sweep, lake, BASE | {"strategy": "donchian_breakout"}).metadata
    ranges = DONCHIAN_BREAKOUT.params_model.sweep_ranges()
    assert _number(sweep["combinations"]) == len(list(DONCHIAN_BREAKOUT.params_model.grid(**ranges))) > 1


def test_sweep_walk_forward_and_monte_carlo_assets(lake: LakeResource) -> None:
    grid = {"fast": [3, 5, 8], "slow": [20, 40]}
    sweep = _materialize(research.parameter_sweep, lake, BASE | {"grid": grid}).metadata
    assert sweep["combinations"].value == 6 and "heatmap" in sweep
    wf = _materialize(research.walk_forward_analysis, lake, BASE | {"grid": grid, "folds": 3}).metadata
    assert isinstance(wf["oos_total_return"].value, float) and "oos_equity" in wf
    mc = _materialize(research.monte_carlo, lake, BASE | {"params": {"fast": 5, "slow": 20}, "paths": 500}).metadata
    assert 0.0 <= _number(mc["ruin_probability"]) <= 1.0 and "fan_chart" in mc


SIZINGS = [
    {"fraction": 0.5},
    {"sizing": "volatility", "vol_target": 0.02, "atr_period": 10},
    {"sizing": "risk", "fraction": 0.8, "atr_period": 7},
]


@pytest.mark.parametrize("given", SIZINGS, ids=["fraction", "volatility", "risk"])
def test_parameter_sweep_uses_every_parameter_it_is_given(given: dict[str, object], lake: LakeResource) -> None:
    grid = {"fast": [3, 8], "slow": [20, 40]}
    meta = _materialize(research.parameter_sweep, lake, BASE | {"params": given, "grid": grid}).metadata
    assert meta["combinations"].value == 4
    best = meta["best_params"].value
    assert isinstance(best, dict) and best.items() >= given.items()
    table = pl.read_parquet(lake.path / "research/parameter_sweep/results.parquet")
    bars = read_bars(lake.path, ["AAPL"], "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    config = BacktestConfig(fees_bps=1.0, slippage_bps=2.0)  # the research config's defaults
    for row in table.iter_rows(named=True):
        result = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(**given, fast=row["fast"], slow=row["slow"]), config)
        assert row["final_equity"] == pytest.approx(result.equity["equity"][-1], rel=1e-9)
        assert row["orders"] == result.orders.height


def _failure(asset: dg.AssetsDefinition, lake: LakeResource, config: dict[str, object]) -> str:
    result = dg.materialize(
        [asset], resources={"lake": lake}, run_config={"ops": {asset.key.path[-1]: {"config": config}}}, raise_on_error=False
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    return str(failure.step_failure_data.error)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"params": {"fsat": 3}}, r"sma_cross: unknown parameter\(s\) \['fsat'\]"),
        ({"grid": {"fast": [3], "slow_window": [20]}}, r"unknown parameter\(s\) \['slow_window'\]"),
        ({"params": {"fast": 3}, "grid": {"fast": [5]}}, r"\['fast'\] given both"),
        ({"params": {"sizing": "kelly"}}, r"sizing='kelly' is invalid"),
        ({"params": {"allow_short": True}}, r"allow_short=True, but the run's allow_short is false"),
    ],
    ids=["unknown_param", "unknown_grid", "both", "bad_value", "ignored_shorts"],
)
@pytest.mark.parametrize("asset", [research.parameter_sweep, research.walk_forward_analysis], ids=["sweep", "walk_forward"])
def test_research_refuses_parameters_it_would_not_use(asset: dg.AssetsDefinition, config: dict[str, object], message: str, lake: LakeResource) -> None:
    assert re.search(message, _failure(asset, lake, BASE | config))


def test_walk_forward_asset_keeps_the_sizing(lake: LakeResource) -> None:
    given = {"sizing": "volatility", "vol_target": 0.02, "atr_period": 10}
    config = BASE | {"params": given, "grid": {"fast": [3, 8], "slow": [20, 40]}, "folds": 2, "allow_short": True}
    _materialize(research.walk_forward_analysis, lake, config)
    folds = pl.read_parquet(lake.path / "research/walk_forward_analysis/folds.parquet")
    assert folds["param_sizing"].to_list() == ["volatility"] * 2
    assert folds["param_atr_period"].to_list() == [10] * 2 and folds["param_allow_short"].to_list() == [True] * 2
