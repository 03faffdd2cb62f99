"""Sweeps: every combination, every field of it honoured, equals a full engine backtest of it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig, BacktestError
from backtests.sweep import expand_grid, sweep
from strategies.base import Strategy
from strategies.builtin import BUILTINS, MOMENTUM, RSI_REVERSION, SMA_CROSS, SmaCrossParams
from tests.backtests.sweep_checks import assert_rows_equal_engine

# Each sizing mode, set so that it binds (entries commit about half the cash, varying by bar).
SIZINGS: dict[str, dict[str, Any]] = {
    "fixed_fraction": {"sizing": "fixed_fraction", "fraction": 0.5},
    "volatility": {"sizing": "volatility", "vol_target": 0.01, "atr_period": 10},
    "risk": {"sizing": "risk", "risk_per_trade": 0.02, "risk_stop_atr": 2.0, "atr_period": 7, "fraction": 0.8},
}
GRIDS: dict[str, dict[str, list[Any]]] = {
    "sma_cross": {"fast": [3, 8], "slow": [15, 30]},
    "rsi_reversion": {"period": [5, 10], "lower": [35.0]},
    "donchian_breakout": {"entry_window": [10, 20], "exit_window": [5]},
}
COSTS = {"fees_bps": 3.0, "fee_per_share": 0.005, "slippage_bps": 5.0}


@pytest.mark.parametrize("short", [False, True], ids=["long_only", "long_short"])
@pytest.mark.parametrize("sizing", list(SIZINGS))
@pytest.mark.parametrize("name", list(GRIDS))
def test_every_single_symbol_builtin_sweep_equals_engine(name: str, sizing: str, short: bool, daily_bars: pl.DataFrame) -> None:
    strategy = BUILTINS[name]
    one = daily_bars.filter(pl.col("symbol") == "JPM")
    config = BacktestConfig(**COSTS, allow_short=short)
    grid = expand_grid(strategy, SIZINGS[sizing] | {"allow_short": short}, GRIDS[name])
    assert all(p.model_dump().items() >= (SIZINGS[sizing] | {"allow_short": short}).items() for p in grid)
    table = sweep(one, strategy, grid, config)
    assert_rows_equal_engine(table, one, strategy, grid, config)
    # The sizing is used, not replaced by the defaults.
    defaults = sweep(one, strategy, expand_grid(strategy, {"allow_short": short}, GRIDS[name]), config)
    assert not np.allclose(table["final_equity"].to_numpy(), defaults["final_equity"].to_numpy())


@pytest.mark.parametrize("short", [False, True], ids=["long_only", "long_short"])
def test_cross_sectional_sweep_runs_the_universe_and_equals_engine(short: bool, daily_bars: pl.DataFrame) -> None:
    config = BacktestConfig(**COSTS, allow_short=short)
    grid = expand_grid(MOMENTUM, {"allow_short": short, "max_weight": 0.4}, {"lookback": [20, 40], "top_k": [1, 2]})
    seen: list[int] = []
    table = sweep(daily_bars, MOMENTUM, grid, config, progress=lambda done, total: seen.append(done))
    assert seen == [4]  # the compiled rank route reports once, at the end
    assert_rows_equal_engine(table, daily_bars, MOMENTUM, grid, config)


def test_a_parameter_the_strategy_does_not_have_is_refused_by_name() -> None:
    with pytest.raises(BacktestError, match=r"cross_sectional_momentum: unknown parameter\(s\) \['sizing'\]"):
        expand_grid(MOMENTUM, {"sizing": "volatility"}, {"lookback": [20]})


FUSED_CONFIGS = [
    BacktestConfig(fees_bps=3.0, fee_per_share=0.005),
    BacktestConfig(fees_bps=1.0, slippage_bps=5.0, allow_short=True),
    BacktestConfig(fractional=True, fill="next_close", allow_short=True),
]


@pytest.mark.parametrize("sizing", list(SIZINGS))
@pytest.mark.parametrize("config", FUSED_CONFIGS, ids=["fees", "long_short_slippage", "fractional_close"])
def test_fused_sma_path_equals_generic_path(config: BacktestConfig, sizing: str, daily_bars: pl.DataFrame) -> None:
    one = daily_bars.filter(pl.col("symbol") == "AAPL")
    grid = expand_grid(SMA_CROSS, SIZINGS[sizing] | {"allow_short": config.allow_short}, {"fast": [3, 5, 8, 13], "slow": [10, 21, 34]})
    assert len(grid) == 4 * 3 - 1  # 13 >= 10 is skipped
    fused = sweep(one, SMA_CROSS, grid, config)
    assert_frame_equal(fused, sweep(one, replace(SMA_CROSS, fast_path=None), grid, config))


def test_fused_path_takes_mixed_grids_row_by_row(daily_bars: pl.DataFrame) -> None:
    """Sizing modes and the short switch vary inside one grid: each row is its own combination."""
    one = daily_bars.filter(pl.col("symbol") == "XOM")
    config = BacktestConfig(**COSTS, allow_short=True)
    grid = expand_grid(SMA_CROSS, {"atr_period": 10}, {"sizing": ["fixed_fraction", "volatility", "risk"], "allow_short": [False, True], "fast": [3], "slow": [21]})
    table = sweep(one, SMA_CROSS, grid, config)
    assert table.columns[:2] == ["sizing", "allow_short"]
    assert_rows_equal_engine(table, one, SMA_CROSS, grid, config)


class TiltedParams(SmaCrossParams):
    tilt: float = 0.0  # a field the fused kernel knows nothing about


@pytest.mark.parametrize(("strategy", "fused"), [(SMA_CROSS, True), (replace(SMA_CROSS, params_model=TiltedParams), False)], ids=["sma", "extra_field"])
def test_fused_kernel_only_when_it_honours_every_field(strategy: Strategy[Any], fused: bool, daily_bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def spying(name: str) -> Any:
        real = getattr(sweep_module, name)

        def spy(*args: Any) -> Any:
            calls.append(name)
            return real(*args)

        return spy

    for name in ("ma_cross_sweep_nb", "sma_cross_sweep_nb"):  # exact windowed means take their own kernel
        monkeypatch.setattr(sweep_module, name, spying(name))
    one = daily_bars.filter(pl.col("symbol") == "XOM")
    sweep(one, strategy, expand_grid(strategy, {"fraction": 0.5}, {"fast": [3, 5], "slow": [20]}))
    assert calls == (["sma_cross_sweep_nb"] if fused else [])


def test_grid_expansion_converts_and_validates_by_field() -> None:
    grid = expand_grid(SMA_CROSS, {"fraction": 0.5, "sizing": "risk"}, {"fast": [3.0, 30], "slow": [20.0]})
    assert [(p.fast, p.slow, p.fraction, p.sizing) for p in grid] == [(3, 20, 0.5, "risk")]  # 30 >= 20 skipped
    assert isinstance(grid[0].fast, int)


@pytest.mark.parametrize(
    ("fixed", "swept", "message"),
    [
        ({"fsat": 3}, {}, r"sma_cross: unknown parameter\(s\) \['fsat'\]"),
        ({}, {"slow_window": [20]}, r"unknown parameter\(s\) \['slow_window'\]"),
        ({"fast": 3}, {"fast": [5]}, r"\['fast'\] given both as fixed params and in the grid"),
        ({}, {"fast": []}, r"no values to sweep for \['fast'\]"),
        ({"fraction": 1.5}, {}, r"fraction=1.5 is invalid"),
        ({"sizing": "kelly"}, {}, r"sizing='kelly' is invalid"),
        ({"fast": 3.5}, {}, r"fast=3.5 is invalid"),
        ({}, {"fast": [40], "slow": [20]}, r"no valid combination.*fast \(40\) must be below slow \(20\)"),
    ],
)
def test_grid_errors_name_the_parameter(fixed: dict[str, Any], swept: dict[str, list[Any]], message: str) -> None:
    with pytest.raises(BacktestError, match=message):
        expand_grid(SMA_CROSS, fixed, swept)


def test_sweep_errors_are_named(daily_bars: pl.DataFrame) -> None:
    with pytest.raises(BacktestError, match="sma_cross runs on one symbol at a time"):
        sweep(daily_bars, SMA_CROSS, [SMA_CROSS.params()])
    one = daily_bars.filter(pl.col("symbol") == "XOM")
    with pytest.raises(BacktestError, match="no valid"):
        expand_grid(SMA_CROSS, {}, {"fast": [30], "slow": [20]})
    with pytest.raises(BacktestError, match="empty parameter grid"):
        sweep(one, RSI_REVERSION, [])
    with pytest.raises(BacktestError, match="rsi_reversion takes RsiReversionParams, got a SmaCrossParams"):
        sweep(one, RSI_REVERSION, [SMA_CROSS.params()])
    with pytest.raises(BacktestError, match="slippage_atr"):
        sweep(one, RSI_REVERSION, [RSI_REVERSION.params()], BacktestConfig(slippage_atr=0.1))
