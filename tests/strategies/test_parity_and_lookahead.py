"""One signal code path: bar-by-bar replay equals the vectorized signals, and nothing looks ahead."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backtests.engine import BacktestConfig, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.base import SIGNAL_COLUMNS, Strategy
from strategies.builtin import DONCHIAN_BREAKOUT, MOMENTUM, RSI_REVERSION, SMA_CROSS
from strategies.live import SignalWindow, UniverseWindow

CASES: list[tuple[Strategy[Any], dict[str, Any]]] = [
    (SMA_CROSS, {"fast": 5, "slow": 20, "allow_short": True, "sizing": "volatility"}),
    (RSI_REVERSION, {"period": 10, "lower": 35.0, "upper": 65.0, "allow_short": True}),
    (DONCHIAN_BREAKOUT, {"entry_window": 15, "exit_window": 8, "sizing": "risk"}),
    (MOMENTUM, {"lookback": 30, "skip": 1, "top_k": 1, "vol_window": 10}),
]
IDS = [c[0].name for c in CASES]


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Four months of hourly bars for three symbols (581 bars each)."""
    return SyntheticSource(seed=21).fetch(["AAPL", "JPM", "XOM"], "1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))


@pytest.mark.parametrize(("strategy", "params"), CASES, ids=IDS)
def test_bar_by_bar_replay_gives_the_vectorized_signals(strategy: Strategy[Any], params: dict[str, Any], bars: pl.DataFrame) -> None:
    p = strategy.params(**params)
    vectorized = strategy.signals(bars, p)
    if strategy.cross_sectional:
        universe = UniverseWindow(strategy, p)
        steps = bars.sort("ts", "symbol").partition_by("ts", maintain_order=True)
        replayed = [row for step in steps for row in universe.push(step.to_dicts())]
    else:
        window = SignalWindow(strategy, p)
        replayed = [window.push(row) for row in bars.sort("ts", "symbol").iter_rows(named=True)]
    live = pl.DataFrame(replayed, schema=vectorized.schema).sort("symbol", "ts")
    assert_frame_equal(live, vectorized)
    assert vectorized["entry_long"].sum() > 5, "the strategy must act for the comparison to mean anything"


@pytest.mark.parametrize(("strategy", "params"), CASES, ids=IDS)
@pytest.mark.parametrize("cut", [150, 450])
def test_changing_bars_after_t_changes_nothing_up_to_t(strategy: Strategy[Any], params: dict[str, Any], cut: int, bars: pl.DataFrame) -> None:
    p = strategy.params(**params)
    ts_cut = bars["ts"].unique().sort()[cut]
    rng = np.random.default_rng(cut)
    shock = pl.Series(rng.uniform(0.7, 1.3, bars.height))
    future = pl.col("ts") > ts_cut
    altered = bars.with_columns(
        *(pl.when(future).then(pl.col(c) * shock).otherwise(pl.col(c)).alias(c) for c in ("open", "close")),
        pl.when(future).then(pl.col("high") * shock * 1.5).otherwise(pl.col("high")).alias("high"),
        pl.when(future).then(pl.col("low") * shock * 0.5).otherwise(pl.col("low")).alias("low"),
    )
    past = pl.col("ts") <= ts_cut
    before = strategy.signals(bars, p).filter(past).select("symbol", "ts", *SIGNAL_COLUMNS)
    after = strategy.signals(altered, p).filter(past).select("symbol", "ts", *SIGNAL_COLUMNS)
    assert_frame_equal(before, after)

    config = BacktestConfig(allow_short=True, timeframe="1h", fees_bps=1.0)
    fills = run_backtest(bars, strategy, p, config).orders.filter(past)
    fills_altered = run_backtest(altered, strategy, p, config).orders.filter(past)
    assert_frame_equal(fills, fills_altered)


def test_fills_come_after_the_signal_bar(bars: pl.DataFrame) -> None:
    p = SMA_CROSS.params(fast=5, slow=20)
    signals = SMA_CROSS.signals(bars, p)
    orders = run_backtest(bars, SMA_CROSS, p, BacktestConfig(timeframe="1h")).orders
    first_entry = signals.filter(pl.col("entry_long")).sort("ts").row(0, named=True)
    first_buy = orders.filter((pl.col("symbol") == first_entry["symbol"]) & (pl.col("side") == "buy")).row(0, named=True)
    next_bar = signals.filter((pl.col("symbol") == first_entry["symbol"]) & (pl.col("ts") > first_entry["ts"]))["ts"].min()
    assert first_buy["ts"] == next_bar
    open_next = bars.filter((pl.col("symbol") == first_entry["symbol"]) & (pl.col("ts") == next_bar))["open"][0]
    assert first_buy["price"] == pytest.approx(open_next)
