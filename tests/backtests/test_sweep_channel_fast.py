"""donchian_breakout's event-to-event sweep (`backtests/sweep_channel_fast_nb.py`) equals the bar-by-bar
kernel it replaces (`channel_sweep_nb` on the polars channel rows) bit for bit: final equity, max
drawdown and orders of every combination, over fees, slippage, per-share fees, whole and fractional
shares, next open and next close fills, shorts, sizings and ATR periods mixed in one grid, ATR
brackets on and off (stop, target 1, target 2, gaps through a level); on quarter-unit bars where
closes sit on the channel and levels on highs and lows, and on a random walk long enough to cross
the kernel's stretches of bars and its range tables. The compiled Donchian channels' breakout bits
equal the ones of polars' rows; channels the route does not recognise take the rows' bits, or the
bar-by-bar kernel where the bits cannot mirror a level."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig
from backtests.sweep import expand_grid, sweep
from backtests.sweep_channel_fast_nb import breakout_bits_nb, channel_bits_nb
from strategies.base import ChannelBreakout
from strategies.builtin import DONCHIAN_BREAKOUT
from tests.backtests.test_sweep_fused_donchian import grid_bars
from tests.backtests.test_sweep_threshold_fast import walk_bars

CONFIGS = {
    "fees_slippage": BacktestConfig(fees_bps=3.0, fee_per_share=0.005, slippage_bps=5.0),
    "long_short": BacktestConfig(fees_bps=2.0, slippage_bps=4.0, allow_short=True),
    "fractional_close": BacktestConfig(fees_bps=1.0, fractional=True, fill="next_close", allow_short=True),
    "no_brackets": BacktestConfig(fees_bps=2.0, allow_short=True, brackets=False),
}
# Every combination of the channel grid under each sizing (all in, half, risk-sized) and two ATR
# periods (the levels' and the sizing's ATR rows): one sweep, several size and ATR rows.
SIZING = {"risk_per_trade": 0.02, "risk_stop_atr": 2.0}
SIZINGS: dict[str, list[Any]] = {"sizing": ["fixed_fraction", "risk"], "fraction": [1.0, 0.5], "atr_period": [3, 14]}
GRID: dict[str, list[Any]] = {"entry_window": [5, 20], "exit_window": [3, 8], "stop_atr": [0.5, 2.0], "target1_atr": [1.0, 3.0], "target2_atr": [2.0, 6.0]}
BARS = {"grid": grid_bars(), "walk": walk_bars(6_000, seed=8)}
SHAPE = DONCHIAN_BREAKOUT.fast_path
assert isinstance(SHAPE, ChannelBreakout)


def _old_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep as it ran before: the channel rows from polars and `channel_sweep_nb` bar by bar
    (the route's way for prices that are not all finite)."""
    monkeypatch.setattr(sweep_module, "_finite", lambda columns: False)


# Where each function the route calls takes its combinations (the kernels) or channel rows.
COUNTED = {"channel_fast_sweep_nb": 9, "channel_sweep_nb": 7, "channel_bits_nb": -1, "breakout_bits_nb": -1}


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Records each call of the route's kernel or bits function `name`: how many combinations or
    channel windows it got."""
    calls: list[int] = []
    real = getattr(sweep_module, name)

    def spy(*args: Any) -> Any:
        calls.append(len(args[COUNTED[name]]))
        return real(*args)

    monkeypatch.setattr(sweep_module, name, spy)
    return calls


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("data", list(BARS))
def test_every_combination_equals_the_bar_by_bar_kernel(data: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bars, config = BARS[data], CONFIGS[name]
    grid = expand_grid(DONCHIAN_BREAKOUT, SIZING | {"allow_short": config.allow_short}, GRID | SIZINGS)
    kernel, channels = _spy(monkeypatch, "channel_fast_sweep_nb"), _spy(monkeypatch, "channel_bits_nb")
    fast = sweep(bars, DONCHIAN_BREAKOUT, grid, config)
    assert kernel == [len(grid)]  # one event-to-event pass
    assert channels == [4]  # on the compiled channels of the four windows
    _old_route(monkeypatch)
    assert_frame_equal(fast, sweep(bars, DONCHIAN_BREAKOUT, grid, config), check_exact=True)
    assert kernel == [len(grid)]
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


@pytest.mark.parametrize("data", list(BARS))
def test_compiled_channel_bits_equal_the_polars_rows_bits(data: str) -> None:
    """Windows of 2 up to past the bars' end, ones that divide the bar count and ones that do not
    (the blocks of the rolling extremes), closes on the channel (grid bars) and off it."""
    bars = BARS[data]
    n = bars.height
    windows = [2, 3, 5, 8, 20, 64, n // 4, n - 2, n - 1, n, n + 3]
    high, low, close = (np.ascontiguousarray(bars[c].to_numpy()) for c in ("high", "low", "close"))
    highs = np.vstack([bars.select(SHAPE.upper(w)).to_series().to_numpy() for w in windows])
    lows = np.vstack([bars.select(SHAPE.lower(w)).to_series().to_numpy() for w in windows])
    up, down, mirrors = breakout_bits_nb(close, highs, lows)
    assert mirrors
    assert up.any() and down.any()
    got_up, got_down = channel_bits_nb(high, low, close, np.array(windows, dtype=np.int64))
    for i, w in enumerate(windows):
        assert np.array_equal(got_up[i], up[i]), ("up", w)
        assert np.array_equal(got_down[i], down[i]), ("down", w)


def test_other_channels_take_their_rows_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel written another way (the same values) is not taken for the Donchian one: its
    polars rows give the bits, with the same numbers."""
    bars, config = BARS["walk"], CONFIGS["long_short"]
    other = replace(DONCHIAN_BREAKOUT, fast_path=replace(SHAPE, upper=lambda w: pl.col("high").shift(1).rolling_max(w)))
    grid = expand_grid(DONCHIAN_BREAKOUT, {"allow_short": True}, GRID)
    expected = sweep(bars, DONCHIAN_BREAKOUT, grid, config)
    rows, channels = _spy(monkeypatch, "breakout_bits_nb"), _spy(monkeypatch, "channel_bits_nb")
    assert_frame_equal(sweep(bars, other, grid, config), expected, check_exact=True)
    assert (rows, channels) == ([4], [])


def test_a_low_broken_under_a_null_high_runs_bar_by_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upper channel null on bars where the lower one is not: a break below it there mirrors no
    level (`c <= high` is False), which the bits cannot tell, so the route runs the rows bar by bar."""
    bars, config = BARS["walk"], CONFIGS["long_short"]
    late = replace(DONCHIAN_BREAKOUT, fast_path=replace(SHAPE, upper=lambda w: pl.col("high").rolling_max(w).shift(1 + 3 * w)))
    grid = expand_grid(DONCHIAN_BREAKOUT, {"allow_short": True}, GRID)
    kernel, old = _spy(monkeypatch, "channel_fast_sweep_nb"), _spy(monkeypatch, "channel_sweep_nb")
    table = sweep(bars, late, grid, config)
    assert (kernel, old) == ([], [len(grid)])
    # The same rows' bits through the event-to-event kernel mirror those levels: other numbers.
    monkeypatch.setattr(sweep_module, "breakout_bits_nb", lambda *args: (*sweep_module._kernel(breakout_bits_nb)(*args)[:2], True))
    assert not sweep(bars, late, grid, config)["final_equity"].equals(table["final_equity"])
