"""The index-built market (backtests/market.py) equals a plain pivot per column, array for array.

The reference is the obvious way to go from long to wide, one polars pivot per column, kept here
to be read by eye. Frames: multi-symbol 1-minute bars with gaps (bars every symbol lacks, as a
halted minute, and bars only one symbol lacks), in the row orders callers hand in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestError, to_market
from backtests.market import SIGNAL_COLUMNS, Market
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS

ARRAYS = ("open", "high", "low", "close")


def reference_market(signals: pl.DataFrame) -> Market:
    """One pivot per column, rows the sorted timestamps, columns the sorted symbols."""
    symbols = sorted(signals["symbol"].unique().to_list())
    ts = signals["ts"].unique().sort()
    for symbol in symbols:
        have = signals.filter(pl.col("symbol") == symbol)["ts"]
        if have.len() != ts.len():
            first = ts.filter(~ts.is_in(have.implode()))
            raise BacktestError(f"{symbol} has {have.len()} bars but the others have {ts.len()}; first missing bar {first[0] if first.len() else '?'}")

    def wide(column: str) -> np.ndarray:
        if column not in signals.columns:
            return np.full((ts.len(), len(symbols)), np.nan)
        table = signals.pivot(on="symbol", index="ts", values=column).sort("ts")
        return table.select(symbols).to_numpy()

    return Market(ts, symbols, *(wide(c) for c in ARRAYS), {c: wide(c) for c in SIGNAL_COLUMNS})


def _signals(drop_everywhere: int = 7) -> pl.DataFrame:
    """SMA-cross signals on three symbols' minute bars, every `drop_everywhere`-th minute missing
    for all of them (a gap the whole market has: not an error)."""
    bars = SyntheticSource(seed=11).fetch(["MSFT", "AAPL", "JPM"], "1m", datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 7, tzinfo=UTC))
    minutes = bars["ts"].unique().sort()
    kept = minutes.gather(np.flatnonzero(np.arange(minutes.len()) % drop_everywhere != 3))
    bars = bars.filter(pl.col("ts").is_in(kept.implode()))
    return SMA_CROSS.signals(bars, SMA_CROSS.params(fast=3, slow=12, allow_short=True))


def _assert_same(got: Market, want: Market) -> None:
    assert got.symbols == want.symbols
    assert got.ts.dtype == want.ts.dtype
    assert got.ts.to_list() == want.ts.to_list()
    for name in ARRAYS:
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == w.dtype and g.flags.c_contiguous
        assert np.array_equal(g, w, equal_nan=True), name
    assert got.signals.keys() == want.signals.keys()
    for name, w in want.signals.items():
        g = got.signals[name]
        assert g.dtype == w.dtype and g.flags.c_contiguous, name
        assert np.array_equal(g, w, equal_nan=True), name


@pytest.mark.parametrize(
    "order",
    ["as_signals_returns_it", "by_ts_then_symbol", "shuffled"],
)
def test_equals_the_pivots_in_any_row_order_with_market_wide_gaps(order: str) -> None:
    signals = _signals()
    assert signals.select(pl.col("entry_long").any(), pl.col("exit_short").any()).row(0) == (True, True)
    frame = {
        "as_signals_returns_it": signals,
        "by_ts_then_symbol": signals.sort("ts", "symbol"),
        "shuffled": signals.sample(fraction=1.0, shuffle=True, seed=3),
    }[order]
    _assert_same(to_market(frame), reference_market(frame))


def test_a_hand_built_frame_without_levels_keeps_its_dtypes() -> None:
    signals = _signals().drop("stop", "target1", "target2").with_columns(pl.lit(1, pl.Int64).alias("size"))
    for frame in (signals, signals.reverse()):
        got = to_market(frame)
        _assert_same(got, reference_market(frame))
        assert got.signals["size"].dtype == np.int64 and np.isnan(got.signals["stop"]).all()


def test_one_symbol_s_bars_in_the_frame_are_one_column() -> None:
    signals = _signals().filter(pl.col("symbol") == "JPM")
    _assert_same(to_market(signals), reference_market(signals))


def test_a_symbol_missing_bars_is_named_with_its_first_missing_bar() -> None:
    signals = _signals()
    aapl = signals.filter(pl.col("symbol") == "AAPL")
    gone = aapl["ts"].gather([40, 41, 300])
    gappy = signals.filter(~((pl.col("symbol") == "AAPL") & pl.col("ts").is_in(gone.implode())))
    for frame in (gappy, gappy.sort("ts", "symbol"), gappy.sample(fraction=1.0, shuffle=True, seed=4)):
        with pytest.raises(BacktestError) as want:
            reference_market(frame)
        with pytest.raises(BacktestError) as got:
            to_market(frame)
        assert str(got.value) == str(want.value)
        assert str(got.value) == f"AAPL has {aapl.height - 3} bars but the others have {aapl.height}; first missing bar {gone[0]}"


def test_a_symbol_with_a_bar_twice_and_one_missing_names_the_double() -> None:
    signals = _signals()
    msft = signals.filter(pl.col("symbol") == "MSFT")
    doubled = pl.concat([signals.filter(pl.col("symbol") != "MSFT"), msft.slice(0, 10), msft.slice(9, 1), msft.slice(11)])
    for frame in (doubled, doubled.sort("symbol", "ts"), doubled.sort("ts", "symbol")):
        with pytest.raises(BacktestError, match=re.escape(f"MSFT has two bars at {msft['ts'][9]}")):
            to_market(frame)


@pytest.mark.parametrize("symbols", [["JPM"], ["MSFT", "AAPL", "JPM"]])
def test_arrays_are_read_only_where_polars_gives_a_view(symbols: list[str]) -> None:
    """As before the index-built path: the compiled kernels keep one specialization (and its cache)."""
    signals = _signals().filter(pl.col("symbol").is_in(symbols))
    for frame in (signals, signals.sort("ts", "symbol")):
        market = to_market(frame)
        for name, array in [(c, getattr(market, c)) for c in ARRAYS] + list(market.signals.items()):
            assert array.flags.writeable == frame[name].to_numpy().flags.writeable, name
