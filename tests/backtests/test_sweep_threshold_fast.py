"""rsi_reversion's event-to-event sweep (`backtests/sweep_threshold_fast_nb.py`) equals the bar-by-bar
kernel it replaces (`threshold_sweep_nb` on the polars RSI rows) bit for bit: final equity, max
drawdown and orders of every combination, over fees, slippage, whole and fractional shares, next
open and next close fills, shorts and every sizing; on bars where the RSI sits exactly on the levels
and on a random walk long enough to cross the kernel's stretches of bars and its range tables."""

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
from backtests.sweep_threshold_fast_nb import rsi_sma_rows_nb
from backtests.sweep_threshold_nb import threshold_sweep_nb
from strategies.base import ThresholdCross
from strategies.builtin import RSI_REVERSION
from strategies.indicators import rsi_sma
from tests.backtests.test_sweep_fused_rsi import tie_bars

CONFIGS = {
    "fees_slippage": BacktestConfig(fees_bps=3.0, fee_per_share=0.005, slippage_bps=5.0),
    "long_short": BacktestConfig(fees_bps=2.0, slippage_bps=4.0, allow_short=True),
    "fractional_close": BacktestConfig(fees_bps=1.0, fractional=True, fill="next_close", allow_short=True),
}
# Every combination of the RSI grid under each sizing (all in, half, risk-sized on two ATR periods):
# one sweep, several size rows.
SIZING = {"risk_per_trade": 0.02, "risk_stop_atr": 2.0}
SIZINGS: dict[str, list[Any]] = {"sizing": ["fixed_fraction", "risk"], "fraction": [1.0, 0.5], "atr_period": [3, 14]}
GRID: dict[str, list[Any]] = {"period": [2, 4, 6], "lower": [25.0, 40.0], "upper": [60.0, 75.0], "exit_level": [50.0, 55.0]}


def walk_bars(n: int = 5_000, seed: int = 5) -> pl.DataFrame:
    """A drifting random walk of one-minute bars: new equity peaks inside held stretches, and
    stretches that cross the kernel's 2,048-bar passes."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0001, 0.002, n)))
    open_ = np.concatenate([[100.0], close[:-1] * (1 + rng.normal(0, 0.0005, n - 1))])
    start = datetime(2020, 1, 2, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": "WALK",
            "ts": [start + timedelta(minutes=i) for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": 1_000.0,
        }
    )


BARS = {"ties": tie_bars(), "walk": walk_bars()}


def _old_route(monkeypatch: pytest.MonkeyPatch) -> Any:
    """rsi_reversion as the sweep ran it before: the RSI rows from the strategy's polars expression
    (an indicator that is not `rsi_sma` itself) and `threshold_sweep_nb` bar by bar."""

    def old(prices: Any, values: Any, value_row: Any, levels: Any, sizes: Any, size_row: Any, short: Any, costs: Any) -> Any:
        return sweep_module._kernel(threshold_sweep_nb)(*prices, values, value_row, *levels, sizes, size_row, short, *costs)

    monkeypatch.setattr(sweep_module, "_threshold_fast", old)
    shape = RSI_REVERSION.fast_path
    assert isinstance(shape, ThresholdCross)
    return replace(RSI_REVERSION, fast_path=replace(shape, indicator=lambda w: rsi_sma(w)))


def _spy_fast(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each call of the event-to-event kernel (its number of combinations)."""
    calls: list[int] = []
    real = sweep_module.threshold_fast_sweep_nb

    def spy(*args: Any) -> Any:
        calls.append(len(args[7]))
        return real(*args)

    monkeypatch.setattr(sweep_module, "threshold_fast_sweep_nb", spy)
    return calls


@pytest.mark.parametrize("closes", ["ties", "walk", "gaps"])
def test_rsi_rows_equal_the_polars_rsi_bit_for_bit(closes: str) -> None:
    rng = np.random.default_rng(1)
    close = {
        "ties": BARS["ties"]["close"].to_numpy(),
        "walk": BARS["walk"]["close"].to_numpy(),
        "gaps": 100.0 + np.cumsum(rng.choice([-3.0, 0.0, 0.0, 0.0, 1.5], 3_000)),  # flat runs: no losses, RSI 100
    }[closes]
    windows = np.array([1, 2, 5, 14, 40, 300], dtype=np.int64)
    rows = rsi_sma_rows_nb(np.ascontiguousarray(close), windows)
    frame = pl.DataFrame({"close": close})
    for i, w in enumerate(windows):
        expected = frame.select(rsi_sma(int(w))).to_series().to_numpy()
        assert np.array_equal(rows[i], expected, equal_nan=True), w


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("data", list(BARS))
def test_every_combination_equals_the_bar_by_bar_kernel(data: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bars, config = BARS[data], CONFIGS[name]
    grid = expand_grid(RSI_REVERSION, SIZING | {"allow_short": config.allow_short}, GRID | SIZINGS)
    calls = _spy_fast(monkeypatch)
    fast = sweep(bars, RSI_REVERSION, grid, config)
    assert calls == [len(grid)]  # one event-to-event pass
    old = sweep(bars, _old_route(monkeypatch), grid, config)
    assert_frame_equal(fast, old, check_exact=True)
    assert (fast["orders"] > 0).all()


def test_rows_split_into_batches_of_lines_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for few (row, level) lines at a time the grid runs a few RSI rows per pass, in the
    grid's order, with the same numbers."""
    bars, config = BARS["walk"], CONFIGS["long_short"]
    grid = expand_grid(RSI_REVERSION, {"allow_short": True}, GRID)
    whole = sweep(bars, RSI_REVERSION, grid, config)
    calls = _spy_fast(monkeypatch)
    monkeypatch.setattr(sweep_module, "LINE_BYTES", 1)
    assert_frame_equal(sweep(bars, RSI_REVERSION, grid, config), whole, check_exact=True)
    assert calls == [len(grid) // 3] * 3  # one pass per RSI row



def test_exit_levels_beyond_the_short_entry_equal_the_bar_by_bar_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exit level above `upper` (and below `lower`): a long meets a short entry before its own
    exit, so the bars the kernel visits while long must include the short entries."""
    bars, config = BARS["walk"], CONFIGS["long_short"]
    grid = expand_grid(RSI_REVERSION, {"allow_short": True, "period": 4}, {"lower": [30.0, 45.0], "upper": [55.0], "exit_level": [20.0, 80.0]})
    fast = sweep(bars, RSI_REVERSION, grid, config)
    assert_frame_equal(fast, sweep(bars, _old_route(monkeypatch), grid, config), check_exact=True)
    assert (fast["orders"] > 0).all()
