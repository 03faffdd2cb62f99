"""`to_market(copy=False)`, the engine's: the same values as the copying default, the prices as
views of the frame's own buffers (no second copy of a portfolio's bars), all-null levels taking no
memory, and a backtest through it identical to one on copied arrays."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from backtests import engine
from backtests.engine import BacktestConfig, run_backtest
from backtests.market import SIGNAL_COLUMNS, to_market
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS

PRICES = ("open", "high", "low", "close")


def _bars() -> pl.DataFrame:
    return SyntheticSource(seed=5).fetch(["MSFT", "AAPL", "JPM"], "1m", datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))


def _signals() -> pl.DataFrame:
    return SMA_CROSS.signals(_bars(), SMA_CROSS.params(fast=3, slow=12, allow_short=True))


def test_views_hold_the_copies_values() -> None:
    signals = _signals()
    copied, viewed = to_market(signals), to_market(signals, copy=False)
    assert viewed.symbols == copied.symbols and viewed.ts.to_list() == copied.ts.to_list()
    for name in PRICES:
        assert np.array_equal(getattr(viewed, name), getattr(copied, name)), name
    for name in SIGNAL_COLUMNS:
        g, w = viewed.signals[name], copied.signals[name]
        assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w, equal_nan=True), name


def test_prices_are_the_frames_own_buffers_and_absent_levels_take_no_memory() -> None:
    signals = _signals()
    market = to_market(signals, copy=False)
    for name, wide in [*((p, getattr(market, p)) for p in PRICES), ("size", market.signals["size"])]:
        assert np.shares_memory(wide, signals[name].to_numpy()), name
    for name in ("stop", "target1", "target2"):
        level = market.signals[name]
        assert level.strides == (0, 0) and not level.flags.writeable and np.isnan(level).all(), name
    assert not np.shares_memory(to_market(signals).close, signals["close"].to_numpy())  # the default copies


def test_an_unsorted_frame_still_gives_the_pivoted_arrays() -> None:
    signals = _signals()
    shuffled = signals.sample(fraction=1.0, shuffle=True, seed=2)
    got, want = to_market(shuffled, copy=False), to_market(signals)
    for name in PRICES:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("config", [BacktestConfig(fees_bps=1.0, allow_short=True), BacktestConfig(slippage_bps=3.0, fee_per_share=0.01)])
def test_a_backtest_on_views_is_the_backtest_on_copies(config: BacktestConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _bars()
    params = SMA_CROSS.params(fast=3, slow=12, allow_short=True, fraction=0.3)
    got = run_backtest(bars, SMA_CROSS, params, config)
    monkeypatch.setattr(engine, "to_market", lambda signals, copy=True: to_market(signals))  # copies, as before
    want = run_backtest(bars, SMA_CROSS, params, config)
    assert got.orders.height > 10
    assert got.orders.equals(want.orders) and got.equity.equals(want.equity) and got.trades.equals(want.trades)
    assert got.metrics == pytest.approx(want.metrics, nan_ok=True, rel=0, abs=0)
