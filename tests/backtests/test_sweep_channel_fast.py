"""donchian_breakout's event-to-event sweep (`backtests/sweep_channel_fast_nb.py`) equals the bar-by-bar
kernel it replaces (`channel_sweep_nb`) bit for bit: final equity, max drawdown and orders of every
combination, over fees, slippage, per-share fees, whole and fractional shares, next open and next
close fills, shorts, every sizing, ATR brackets on and off (stop, target 1, target 2, gaps through
a level); on quarter-unit bars where closes sit on the channel and levels on highs and lows, and on
a random walk long enough to cross the kernel's stretches of bars and its range tables."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig
from backtests.sweep import expand_grid, sweep
from backtests.sweep_channel_nb import channel_sweep_nb
from strategies.builtin import DONCHIAN_BREAKOUT
from tests.backtests.test_sweep_fused_donchian import grid_bars
from tests.backtests.test_sweep_threshold_fast import walk_bars

CONFIGS = {
    "fees_slippage": BacktestConfig(fees_bps=3.0, fee_per_share=0.005, slippage_bps=5.0),
    "long_short": BacktestConfig(fees_bps=2.0, slippage_bps=4.0, allow_short=True),
    "fractional_close": BacktestConfig(fees_bps=1.0, fractional=True, fill="next_close", allow_short=True),
    "no_brackets": BacktestConfig(fees_bps=2.0, allow_short=True, brackets=False),
}
SIZINGS: dict[str, dict[str, Any]] = {
    "all_in": {},
    "fixed_fraction": {"sizing": "fixed_fraction", "fraction": 0.5},
    "risk": {"sizing": "risk", "risk_per_trade": 0.02, "risk_stop_atr": 2.0, "atr_period": 3, "fraction": 0.8},
}
GRID: dict[str, list[Any]] = {"entry_window": [5, 20], "exit_window": [3, 8], "stop_atr": [0.5, 2.0], "target1_atr": [1.0, 3.0], "target2_atr": [2.0, 6.0]}
BARS = {"grid": grid_bars(), "walk": walk_bars(6_000, seed=8)}


def _old_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep as it ran before: `channel_sweep_nb` bar by bar (the same arguments but the
    breakout bits and the chunks)."""
    monkeypatch.setattr(sweep_module, "channel_fast_sweep_nb", lambda *args: sweep_module._kernel(channel_sweep_nb)(*args[:7], *args[9:-1]))


def _spy_fast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each call of the event-to-event kernel (its number of combinations)."""
    calls: list[int] = []
    real = sweep_module.channel_fast_sweep_nb

    def spy(*args: Any) -> Any:
        calls.append(len(args[9]))
        return real(*args)

    monkeypatch.setattr(sweep_module, "channel_fast_sweep_nb", spy)
    return calls


@pytest.mark.parametrize("sizing", list(SIZINGS))
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("data", list(BARS))
def test_every_combination_equals_the_bar_by_bar_kernel(data: str, name: str, sizing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bars, config = BARS[data], CONFIGS[name]
    grid = expand_grid(DONCHIAN_BREAKOUT, SIZINGS[sizing] | {"allow_short": config.allow_short}, GRID)
    calls = _spy_fast(monkeypatch)
    fast = sweep(bars, DONCHIAN_BREAKOUT, grid, config)
    assert calls == [len(grid)]  # one event-to-event pass
    _old_route(monkeypatch)
    assert_frame_equal(fast, sweep(bars, DONCHIAN_BREAKOUT, grid, config), check_exact=True)
    assert (fast["orders"] > 0).all()


def test_the_brackets_act_in_the_grid() -> None:
    """The data does what it is for: with brackets on, tight stops and targets trade more orders than
    the signals alone (half exits at target 1, whole exits at the stop or target 2)."""
    bars = BARS["walk"]
    grid = expand_grid(DONCHIAN_BREAKOUT, {}, {"entry_window": [20], "exit_window": [8], "stop_atr": [0.5], "target1_atr": [1.0]})
    on = sweep(bars, DONCHIAN_BREAKOUT, grid, BacktestConfig(fees_bps=1.0))
    off = sweep(bars, DONCHIAN_BREAKOUT, grid, BacktestConfig(fees_bps=1.0, brackets=False))
    assert on["orders"][0] > off["orders"][0]
    assert not np.isclose(on["final_equity"][0], off["final_equity"][0])
    assert isinstance(on, pl.DataFrame)
