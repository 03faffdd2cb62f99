"""Two shortcuts on the signal path that must not change a value: `Strategy.signals` skips the sort
when the bars are already in (symbol, ts) order, and a windowed indicator decides which windows hold
a null from a running count of nulls instead of a second rolling expression."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from strategies import indicators as ind
from strategies.base import sorted_by_symbol_ts
from strategies.builtin import SMA_CROSS

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def _bars(symbols: list[str], n: int) -> pl.DataFrame:
    rng = np.random.default_rng(5)
    frames = []
    for symbol in symbols:
        close = 100.0 + np.cumsum(rng.normal(0.0, 1.0, n))
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "ts": [T0 + timedelta(minutes=i) for i in range(n)],
                    "open": close,
                    "high": close + 0.5,
                    "low": close - 0.5,
                    "close": close,
                    "volume": 1.0,
                }
            )
        )
    return pl.concat(frames)


def _swap_rows(frame: pl.DataFrame, i: int, j: int) -> pl.DataFrame:
    order = list(range(frame.height))
    order[i], order[j] = order[j], order[i]
    return frame[order]


def test_sorted_frames_are_recognised() -> None:
    assert sorted_by_symbol_ts(_bars(["A"], 50))
    assert sorted_by_symbol_ts(_bars(["A", "B", "C"], 50))  # ts falls back where each symbol starts


@pytest.mark.parametrize(
    "case",
    ["ts_falls_inside_a_symbol", "symbols_out_of_order", "categorical_symbols", "a_null_ts", "a_null_symbol"],
)
def test_frames_out_of_order_or_of_another_kind_are_not(case: str) -> None:
    bars = _bars(["A", "B", "C"], 50)
    frame = {
        "ts_falls_inside_a_symbol": lambda: _swap_rows(bars, 60, 61),  # symbols still sorted
        "symbols_out_of_order": lambda: pl.concat([bars.filter(pl.col("symbol") == "B"), bars.filter(pl.col("symbol") != "B")]),
        "categorical_symbols": lambda: bars.with_columns(pl.col("symbol").cast(pl.Categorical)),
        "a_null_ts": lambda: bars.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("ts")).alias("ts")),
        "a_null_symbol": lambda: bars.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("symbol")).alias("symbol")),
    }[case]()
    assert not sorted_by_symbol_ts(frame)


def test_signals_of_a_frame_out_of_order_inside_a_symbol_are_those_of_the_sorted_frame() -> None:
    bars = _bars(["A", "B"], 200)
    params = SMA_CROSS.params(fast=3, slow=8)
    want = SMA_CROSS.signals(bars, params)
    got = SMA_CROSS.signals(_swap_rows(bars, 250, 251), params)
    assert got.equals(want)


@pytest.mark.parametrize("window", [1, 3, 4, 7])
def test_a_null_voids_exactly_the_windows_that_hold_it(window: int) -> None:
    values: list[float | None] = [float(v) for v in range(1, 21)]
    nulls = (5, 6, 13)
    for k in nulls:
        values[k] = None
    got = pl.DataFrame({"x": values}, schema={"x": pl.Float64}).select(ind.window_mean(pl.col("x"), window)).to_series().to_list()
    for t, value in enumerate(got):
        window_rows = range(t - window + 1, t + 1)
        if t < window - 1 or any(k in window_rows for k in nulls):
            assert value is None, t
        else:
            assert value == sum(float(r + 1) for r in window_rows) / window, t


def test_windows_longer_than_a_group_with_nulls_are_null_per_group() -> None:
    frame = pl.DataFrame({"g": ["a"] * 3 + ["b"] * 6, "x": [1.0, None, 3.0, 1.0, 2.0, None, 4.0, 5.0, 6.0]})
    got = frame.select(ind.window_mean(pl.col("x"), 5).over("g")).to_series().to_list()
    assert got == [None, None, None, None, None, None, None, None, None]
    got = frame.select(ind.window_mean(pl.col("x"), 3).over("g")).to_series().to_list()
    assert got == [None, None, None, None, None, None, None, None, 5.0]
