"""sma_cross's own sweep kernel (`backtests/sweep_sma_nb.py`): its means are `sma`'s to the last bit,
its numbers are the general moving-average kernel's to the last bit (on bars whose means tie, with
orders decided on one block's last bar and filled on the next's), and the sweep's rows equal the
engine's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig, fee_fractions, to_market
from backtests.sweep import _indicator_rows, _shape_fields, _size_columns, expand_grid, sweep
from backtests.sweep_fused_nb import ma_cross_sweep_nb
from backtests.sweep_nb import _mark_nb as bar_mark_nb
from backtests.sweep_sma_nb import BLOCK, LANES, SPAN, _mark_nb, block_means_nb, sma_cross_sweep_nb
from strategies.builtin import SMA_CROSS
from strategies.indicators import sma
from tests.backtests.sweep_checks import assert_rows_equal_engine

WINDOWS = [1, 2, 3, 5, 8, 13, 40, 41, 300]


def step_bars(n: int, seed: int = 4) -> pl.DataFrame:
    """One symbol of one-minute bars whose closes move by whole units (-1, 0, +1): the means of
    different windows tie often, so crossings from and to equality are exercised."""
    rng = np.random.default_rng(seed)
    close = 500.0 + np.cumsum(rng.integers(-1, 2, n)).astype(np.float64)
    open_ = np.concatenate(([close[0]], close[:-1])) + 0.25
    ts = [datetime(2024, 1, 2, 14, 30, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "symbol": ["STEP"] * n,
            "ts": ts,
            "open": open_,
            "high": np.maximum(open_, close) + 0.5,
            "low": np.minimum(open_, close) - 0.5,
            "close": close,
            "volume": np.full(n, 1_000.0),
        }
    )


@pytest.mark.parametrize("block", [BLOCK, 1000, 37])
def test_block_means_equal_sma_bit_for_bit(block: int) -> None:
    bars = step_bars(2 * BLOCK + 123)
    expected, _ = _indicator_rows(bars, sma, WINDOWS)
    x = bars["close"].to_numpy()
    windows = np.array(WINDOWS, dtype=np.int64)
    got = np.empty_like(expected)
    out, acc = np.empty((len(WINDOWS), block + 1)), np.empty(LANES)
    for t0 in range(0, bars.height, block):
        t1 = min(t0 + block, bars.height)
        block_means_nb(x, windows, t0, t1, out, acc)
        got[:, t0:t1] = out[:, 1 : t1 - t0 + 1]
        if t0:  # index 0 is the bar before the block
            assert np.array_equal(out[:, 0], expected[:, t0 - 1], equal_nan=True)
    assert np.array_equal(got, expected, equal_nan=True)


@pytest.mark.parametrize(
    ("config", "sizing"),
    [
        (BacktestConfig(fees_bps=2.0, slippage_bps=3.0), {}),
        (BacktestConfig(fees_bps=1.0, fee_per_share=0.01, allow_short=True), {"sizing": "volatility", "vol_target": 0.01, "atr_period": 20}),
        (BacktestConfig(fees_bps=1.0, fractional=True, fill="next_close", allow_short=True), {"fraction": 0.7}),
    ],
    ids=["long_only", "long_short_volatility", "fractional_close"],
)
def test_kernel_equals_the_general_kernel_bit_for_bit(config: BacktestConfig, sizing: dict[str, Any]) -> None:
    bars = step_bars(3 * BLOCK + 500)
    grid = expand_grid(SMA_CROSS, sizing, {"fast": [1, 2, 3, 5, 8], "slow": [2, 3, 13, 41], "allow_short": [False, True]})
    shape = SMA_CROSS.fast_path
    sized = _size_columns(bars, SMA_CROSS, grid, _shape_fields(shape), levels=False)  # type: ignore[arg-type]
    assert sized is not None
    market, sizes, size_row = sized
    windows = sorted({w for p in grid for w in (p.fast, p.slow)})
    means, row = _indicator_rows(bars, sma, windows)
    price = market.open if config.fill == "next_open" else market.close
    fill, close = np.ascontiguousarray(price[:, 0]), np.ascontiguousarray(market.close[:, 0])
    fast = np.array([row[p.fast] for p in grid], dtype=np.int64)
    slow = np.array([row[p.slow] for p in grid], dtype=np.int64)
    short = np.array([p.allow_short and config.allow_short for p in grid], dtype=np.bool_)
    costs = (np.ascontiguousarray(fee_fractions(market, config)[:, 0]), config.slippage_bps / 1e4, config.init_cash, not config.fractional)
    expected = ma_cross_sweep_nb(fill, close, means, fast, slow, sizes, size_row, short, *costs)
    for chunks in (1, 3):
        got = sma_cross_sweep_nb(bars["close"].to_numpy(), np.array(windows, dtype=np.int64), fill, close, fast, slow, sizes, size_row, short, *costs, chunks)
        for name, a, b in zip(("final", "max_dd", "orders"), expected, got, strict=True):
            assert np.array_equal(a, b), (name, chunks, np.flatnonzero(a != b)[:5])
    assert (expected[2] > 2).all()
    # Orders decided on a block's last bar fill on the next block's first: the grid has some.
    up = (means[fast] > means[slow]) & (np.roll(means[fast], 1, axis=1) <= np.roll(means[slow], 1, axis=1))
    assert up[:, BLOCK - 1].any() or up[:, 2 * BLOCK - 1].any() or up[:, 3 * BLOCK - 1].any()


def test_sweep_takes_the_sma_kernel_and_equals_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = sweep_module.sma_cross_sweep_nb

    def spy(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(sweep_module, "sma_cross_sweep_nb", spy)
    bars = step_bars(BLOCK + 700, seed=8)
    config = BacktestConfig(fees_bps=2.0, slippage_bps=1.0, allow_short=True)
    grid = expand_grid(SMA_CROSS, {"allow_short": True}, {"fast": [2, 7], "slow": [9, 30]})
    table = sweep(bars, SMA_CROSS, grid, config)
    assert calls == [1]
    assert_rows_equal_engine(table, bars, SMA_CROSS, grid, config)
    assert to_market(bars).close.shape[0] > BLOCK


def test_marks_of_a_stretch_equal_the_bar_by_bar_marks() -> None:
    """Long and short stretches of a float random walk, from peaks and drawdowns both below and
    above what the stretch reaches, up to twelve spans long (their whole spans' ranges read from
    the span tables): the same peak and drawdown as marking every bar."""
    rng = np.random.default_rng(2)
    close = 100.0 + np.cumsum(rng.normal(0.0, 0.3, 20 * SPAN + 7))
    spans = [close[s : s + SPAN] for s in range(0, close.size, SPAN)]
    span_hi, span_lo = np.array([p.max() for p in spans]), np.array([p.min() for p in spans])
    held_peak = walked = 0
    for _ in range(400):
        a = int(rng.integers(0, close.size - 1))
        b = int(rng.integers(a, min(close.size, a + 12 * SPAN)))
        pos = float(rng.choice([-1.0, 0.0, 1.0]) * rng.uniform(100.0, 900.0))
        cash = 100_000.0 - pos * close[a]
        peak, dd = float(rng.uniform(90_000.0, 110_000.0)), float(rng.choice([0.0, 0.001, 0.01]))
        want_peak, want_dd = peak, dd
        for t in range(a, b + 1):
            _, want_peak, want_dd = bar_mark_nb(cash, pos, close[t], want_peak, want_dd)
        assert _mark_nb(close, span_hi, span_lo, a, b, cash, pos, peak, dd) == (want_peak, want_dd)
        held_peak += want_dd > dd and want_peak == peak
        walked += want_dd > dd and want_peak > peak
    # Stretches that deepened the drawdown under the peak they started with (settled from their
    # lowest close) and past a new peak (walked record by record): both paths ran.
    assert held_peak > 50
    assert walked > 50
