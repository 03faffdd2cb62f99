"""rsi_reversion's fused sweep (`strategies.base.ThresholdCross`, `backtests/sweep_threshold_nb.py`):
every combination equals a full engine backtest of it, on bars built so the RSI sits exactly on
the levels (integer price steps: gains and losses tie, RSI = 25, 50, 60, 75 to the last digit, and
40 to 1e-9)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig
from backtests.sweep import expand_grid, sweep
from strategies.base import ThresholdCross
from strategies.builtin import RSI_REVERSION
from tests.backtests.sweep_checks import assert_rows_equal_engine

SIZINGS: dict[str, dict[str, Any]] = {
    "fixed_fraction": {"sizing": "fixed_fraction", "fraction": 0.5},
    "volatility": {"sizing": "volatility", "vol_target": 0.01, "atr_period": 5},
    "risk": {"sizing": "risk", "risk_per_trade": 0.02, "risk_stop_atr": 2.0, "atr_period": 3, "fraction": 0.8},
}
CONFIGS = {
    "fees_slippage": BacktestConfig(fees_bps=3.0, fee_per_share=0.005, slippage_bps=5.0),
    "long_short": BacktestConfig(fees_bps=2.0, slippage_bps=4.0, allow_short=True),
    "fractional_close": BacktestConfig(fees_bps=1.0, fractional=True, fill="next_close", allow_short=True),
}
# Levels an RSI of integer gains and losses hits (50: equal; 60: 3 to 2; 25/75: 1 to 3; 40 to 1e-9).
GRID: dict[str, list[Any]] = {"period": [4, 6], "lower": [25.0, 40.0], "upper": [60.0, 75.0], "exit_level": [50.0, 55.0]}


def tie_bars(n: int = 400, seed: int = 11) -> pl.DataFrame:
    """One symbol whose closes move by -2..+2 whole units a bar (so windows of gains and losses
    tie often), opens a quarter off the previous close, highs and lows around both."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.integers(-2, 3, n)).astype(np.float64)
    open_ = np.concatenate([[100.0], close[:-1] + rng.choice([-0.25, 0.0, 0.25], n - 1)])
    start = datetime(2020, 1, 1, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": "TIE",
            "ts": [start + timedelta(days=i) for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": 1_000.0,
        }
    )


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return tie_bars()


def _spy_kernel(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each call of a fused threshold kernel through the sweep (the combinations it got):
    the bar-by-bar one, or the event-to-event one finite closes are routed to."""
    calls: list[int] = []

    def spying(name: str, combinations_at: int) -> None:
        real = getattr(sweep_module, name)

        def spy(*args: Any) -> Any:
            calls.append(len(args[combinations_at]))
            return real(*args)

        monkeypatch.setattr(sweep_module, name, spy)

    spying("threshold_sweep_nb", 3)  # (open, close, values, value_row, ...)
    spying("threshold_fast_sweep_nb", 8)  # (open, close, values, below, above, 3 line rows, value_row, ...)
    return calls


def test_the_rsi_levels_tie_exactly_in_the_data(bars: pl.DataFrame) -> None:
    """The data does what it is for: the RSI lands exactly on levels of the grid, and within 1e-9
    of 40 without being 40 (its ratio 2/3 does not round back)."""
    shape = RSI_REVERSION.fast_path
    assert isinstance(shape, ThresholdCross)
    for period in GRID["period"]:
        values = bars.select(shape.indicator(period)).to_series().drop_nulls()
        for level in (25.0, 50.0, 60.0, 75.0):
            assert (values == level).sum() > 5, (period, level)
        assert (values == 40.0).sum() == 0 and ((values - 40.0).abs() < 1e-9).sum() > 5, period


@pytest.mark.parametrize("sizing", list(SIZINGS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_rsi_combination_equals_the_engine(name: str, sizing: str, bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIGS[name]
    calls = _spy_kernel(monkeypatch)
    fixed = SIZINGS[sizing] | {"allow_short": config.allow_short}
    grid = expand_grid(RSI_REVERSION, fixed, GRID)
    assert len(grid) == 16
    table = sweep(bars, RSI_REVERSION, grid, config)
    assert calls == [16]  # one fused pass, no generic fallback
    assert_rows_equal_engine(table, bars, RSI_REVERSION, grid, config)


def test_shorts_and_sizing_vary_row_by_row_in_one_grid(bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIGS["long_short"]
    calls = _spy_kernel(monkeypatch)
    grid = expand_grid(RSI_REVERSION, {"atr_period": 4, "lower": 40.0, "upper": 60.0}, {"sizing": ["fixed_fraction", "volatility", "risk"], "allow_short": [False, True], "period": [4]})
    table = sweep(bars, RSI_REVERSION, grid, config)
    assert calls == [6]
    assert_rows_equal_engine(table, bars, RSI_REVERSION, grid, config)
    by_short = table.group_by("allow_short").agg(pl.col("orders").sum()).sort("allow_short")["orders"].to_list()
    assert by_short[1] > by_short[0]  # shorts trade when switched on


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_rsi_equals_the_generic_path_on_generated_bars(name: str, daily_bars: pl.DataFrame) -> None:
    config = CONFIGS[name]
    one = daily_bars.filter(pl.col("symbol") == "AAPL")
    grid = expand_grid(RSI_REVERSION, {"allow_short": config.allow_short, "sizing": "volatility"}, {"period": [5, 14], "lower": [30.0, 40.0], "exit_level": [50.0, 60.0]})
    fused = sweep(one, RSI_REVERSION, grid, config)
    assert_frame_equal(fused, sweep(one, replace(RSI_REVERSION, fast_path=None), grid, config))
