"""donchian_breakout's fused sweep (`strategies.base.ChannelBreakout`, `backtests/sweep_channel_nb.py`):
every combination equals a full engine backtest of it, brackets included, on bars built on a
quarter-unit grid so closes sit exactly on the channel's high or low and bracket levels on bars'
highs and lows (the > / >= and <= edges of every rule are exercised)."""

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
from strategies.base import ChannelBreakout
from strategies.builtin import DONCHIAN_BREAKOUT
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
GRID: dict[str, list[Any]] = {"entry_window": [5, 10], "exit_window": [3, 6], "stop_atr": [1.0, 2.0], "target1_atr": [1.0, 2.5]}


def grid_bars(n: int = 400, seed: int = 21) -> pl.DataFrame:
    """One symbol on a quarter-unit price grid: closes move by -2..+2 units, opens a quarter off the
    previous close or on it, highs and lows on the open/close or half a unit beyond."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.integers(-2, 3, n)).astype(np.float64)
    open_ = np.concatenate([[100.0], close[:-1] + rng.choice([-0.25, 0.0, 0.25], n - 1)])
    start = datetime(2020, 1, 1, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": "GRID",
            "ts": [start + timedelta(days=i) for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) + rng.choice([0.0, 0.5], n),
            "low": np.minimum(open_, close) - rng.choice([0.0, 0.5], n),
            "close": close,
            "volume": 1_000.0,
        }
    )


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return grid_bars()


def _spy_kernel(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each call of a fused channel kernel through the sweep (the combinations it got): the
    bar-by-bar one, or the event-to-event one finite prices are routed to."""
    calls: list[int] = []

    def spying(name: str, combinations_at: int) -> None:
        real = getattr(sweep_module, name)

        def spy(*args: Any) -> Any:
            calls.append(len(args[combinations_at]))
            return real(*args)

        monkeypatch.setattr(sweep_module, name, spy)

    spying("channel_sweep_nb", 7)  # (fill, open, high, low, close, channel high, channel low, entry_row, ...)
    spying("channel_fast_sweep_nb", 9)  # the same with the breakout bits (up, down) before entry_row
    return calls


def test_closes_sit_exactly_on_the_channel(bars: pl.DataFrame) -> None:
    """The data does what it is for: closes equal the prior channel's high or low, often."""
    shape = DONCHIAN_BREAKOUT.fast_path
    assert isinstance(shape, ChannelBreakout)
    for w in GRID["entry_window"] + GRID["exit_window"]:
        edges = bars.select(
            (pl.col("close") == shape.upper(w)).sum().alias("high"),
            (pl.col("close") == shape.lower(w)).sum().alias("low"),
        ).row(0)
        assert min(edges) > 3, (w, edges)


@pytest.mark.parametrize("sizing", list(SIZINGS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_donchian_combination_equals_the_engine(name: str, sizing: str, bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CONFIGS[name]
    calls = _spy_kernel(monkeypatch)
    grid = expand_grid(DONCHIAN_BREAKOUT, SIZINGS[sizing] | {"allow_short": config.allow_short}, GRID)
    assert len(grid) == 16
    table = sweep(bars, DONCHIAN_BREAKOUT, grid, config)
    assert calls == [16]  # one fused pass, no generic fallback
    assert_rows_equal_engine(table, bars, DONCHIAN_BREAKOUT, grid, config)


def test_brackets_off_and_mixed_rows_equal_the_engine(bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorts on/off and sizing vary row by row; the short parameter without the config's shorts
    still mirrors no level; brackets switched off in the config are off in the kernel."""
    calls = _spy_kernel(monkeypatch)
    swept = {"sizing": ["fixed_fraction", "risk"], "allow_short": [False, True], "entry_window": [5]}
    for config in (BacktestConfig(fees_bps=2.0, allow_short=True, brackets=False), BacktestConfig(fees_bps=2.0, slippage_bps=3.0)):
        grid = expand_grid(DONCHIAN_BREAKOUT, {"atr_period": 4, "exit_window": 3}, swept)
        assert_rows_equal_engine(sweep(bars, DONCHIAN_BREAKOUT, grid, config), bars, DONCHIAN_BREAKOUT, grid, config)
    assert calls == [4, 4]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_donchian_equals_the_generic_path_on_generated_bars(name: str, daily_bars: pl.DataFrame) -> None:
    config = CONFIGS[name]
    one = daily_bars.filter(pl.col("symbol") == "JPM")
    grid = expand_grid(DONCHIAN_BREAKOUT, {"allow_short": config.allow_short, "sizing": "volatility"}, {"entry_window": [10, 20], "exit_window": [5, 10], "target2_atr": [3.0, 6.0]})
    fused = sweep(one, DONCHIAN_BREAKOUT, grid, config)
    assert_frame_equal(fused, sweep(one, replace(DONCHIAN_BREAKOUT, fast_path=None), grid, config))
