"""The long-to-wide step every backtest starts from: aligned arrays, or an error naming the bar."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestError, to_market
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS


def _signals() -> pl.DataFrame:
    bars = SyntheticSource(seed=5).fetch(["MSFT", "AAPL", "JPM"], "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    return SMA_CROSS.signals(bars, SMA_CROSS.params(fast=3, slow=8)).sample(fraction=1.0, shuffle=True, seed=1)


def test_columns_are_symbols_in_order_rows_are_bars_in_time() -> None:
    signals = _signals()
    market = to_market(signals)
    assert market.symbols == ["AAPL", "JPM", "MSFT"]
    for j, symbol in enumerate(market.symbols):
        one = signals.filter(pl.col("symbol") == symbol).sort("ts")
        assert np.array_equal(market.close[:, j], one["close"].to_numpy())
        assert np.array_equal(market.signals["entry_long"][:, j], one["entry_long"].to_numpy())
        assert np.array_equal(market.signals["size"][:, j], one["size"].to_numpy(), equal_nan=True)
    assert market.ts.to_list() == sorted(signals["ts"].unique().to_list())


def test_a_duplicated_or_missing_bar_is_named() -> None:
    signals = _signals()
    jpm = signals.filter(pl.col("symbol") == "JPM").sort("ts")
    twice = pl.concat([signals.filter(pl.col("symbol") != "JPM"), jpm.head(1), jpm.head(1), jpm.slice(2)])  # as many rows, one bar twice
    with pytest.raises(BacktestError, match=r"JPM has two bars at 2024-01-02"):
        to_market(twice)
    with pytest.raises(BacktestError, match=r"JPM has \d+ bars but the others have"):
        to_market(signals.filter(~((pl.col("symbol") == "JPM") & (pl.col("ts") == pl.col("ts").max()))))
