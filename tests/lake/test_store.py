"""The Parquet store: atomic partition replacement and pruned, pushed-down reads."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake import store
from lake.calendar import session_bounds
from lake.errors import LakeError, UnknownSymbolError
from lake.sources.synthetic import SyntheticSource


def _one_symbol(day_bars: pl.DataFrame, symbol: str = "AAPL") -> pl.DataFrame:
    return day_bars.filter(pl.col("symbol") == symbol)


def test_round_trip_in_hive_layout(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    aapl = _one_symbol(day_bars)
    [path] = store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl.reverse())
    assert path == tmp_path / "bars/timeframe=1m/symbol=AAPL/date=2024-11-27/part.parquet"
    assert_frame_equal(store.read_bars(tmp_path, ["AAPL"], "1m"), aapl)


def test_replacing_a_partition_replaces_it_exactly(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    aapl = _one_symbol(day_bars)
    store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl)
    store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl.head(10))
    assert store.read_bars(tmp_path, ["AAPL"], "1m").height == 10
    assert store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl.head(0)) == []
    assert list(tmp_path.rglob("*.parquet")) == []


def test_a_crash_mid_write_leaves_the_previous_partition(
    tmp_path: Path, day_bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    aapl = _one_symbol(day_bars)
    store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl)
    real_write = pl.DataFrame.write_parquet

    def write_half_then_die(self: pl.DataFrame, file: Path, **kwargs: object) -> None:
        real_write(self.head(5), file)  # a partial file reaches the disk...
        raise OSError("disk full")  # ...and the process fails before the rename

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl.head(100))
    monkeypatch.undo()
    assert_frame_equal(store.read_bars(tmp_path, ["AAPL"], "1m"), aapl)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["part.parquet"], "no temp file left behind"


def test_a_killed_writes_temp_file_is_swept_by_the_next_write_of_that_partition(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    """SIGKILL leaves no `finally`: the temp file stays until the partition is written again. A temp
    file younger than ORPHAN_AGE_S may be another writer's work in progress and is left alone."""
    import os

    aapl = _one_symbol(day_bars)
    [path] = store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl)
    orphan = path.with_name(f".{path.name}.deadbeef.tmp")
    orphan.write_bytes(b"half a parquet file")
    aged = orphan.stat().st_mtime - store.ORPHAN_AGE_S - 1
    os.utime(orphan, (aged, aged))
    live = path.with_name(f".{path.name}.cafe.tmp")
    live.write_bytes(b"being written")
    assert_frame_equal(store.read_bars(tmp_path, ["AAPL"], "1m"), aapl)  # readers never take a temp file
    store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", aapl.head(100))
    assert not orphan.exists() and live.exists()
    assert_frame_equal(store.read_bars(tmp_path, ["AAPL"], "1m"), aapl.head(100))


def test_reads_open_only_the_partitions_in_range(tmp_path: Path) -> None:
    source = SyntheticSource()
    for day in ("2024-11-25", "2024-11-26", "2024-11-27"):
        bars = source.fetch(["AAPL", "MSFT"], "1m", *session_bounds(day))
        for symbol in ("AAPL", "MSFT"):
            store.replace_partition(tmp_path, "bars", "1m", symbol, day, bars.filter(pl.col("symbol") == symbol))
    lo, hi = datetime(2024, 11, 26, 15, tzinfo=UTC), datetime(2024, 11, 26, 16, tzinfo=UTC)
    files = store.partition_files(tmp_path, "bars", "1m", ["MSFT"], lo, hi)
    assert {f.parent.name for f in files} <= {"date=2024-11-25", "date=2024-11-26", "date=2024-11-27"}
    assert all("symbol=MSFT" in str(f) for f in files) and "date=2024-11-26" in {f.parent.name for f in files}
    assert len(store.partition_files(tmp_path, "bars", "1m", ["MSFT"], date(2024, 11, 27), None)) < 3
    window = store.read_bars(tmp_path, ["MSFT"], "1m", lo, hi)
    assert window.height == 60 and window["ts"].min() == lo and window["ts"].max() < hi
    assert set(window["symbol"]) == {"MSFT"}


def test_unknown_symbol_and_bad_period_are_named(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    store.replace_partition(tmp_path, "bars", "1m", "AAPL", "2024-11-27", _one_symbol(day_bars))
    with pytest.raises(UnknownSymbolError, match="'TSLA'"):
        store.read_bars(tmp_path, ["TSLA"], "1m")
    with pytest.raises(LakeError, match="'Nov-27'"):
        store.replace_partition(tmp_path, "bars", "1m", "AAPL", "Nov-27", day_bars)
    with pytest.raises(LakeError, match="naive"):
        store.read_bars(tmp_path, ["AAPL"], "1m", datetime(2024, 11, 27), None)


def test_replace_partition_frames_writes_what_replace_partition_writes(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    """Several partitions at once (threads): the same bytes as one call per partition; an empty frame
    removes its partition."""
    aapl, msft = _one_symbol(day_bars), _one_symbol(day_bars, "MSFT")
    [one] = store.replace_partition(tmp_path / "one", "bars", "1m", "AAPL", "2024-11-27", aapl)
    store.replace_partition(tmp_path / "many", "bars", "1m", "MSFT", "2024-11-26", msft)
    paths = store.replace_partition_frames(
        tmp_path / "many", "bars", "1m", {("AAPL", "2024-11-27"): aapl, ("MSFT", "2024-11-26"): msft.clear()}
    )
    assert paths[("MSFT", "2024-11-26")] == [] and paths[("AAPL", "2024-11-27")][0].read_bytes() == one.read_bytes()
    assert [p.relative_to(tmp_path / "many") for p in (tmp_path / "many").rglob("*.parquet")] == [one.relative_to(tmp_path / "one")]


def _chunked(frame: pl.DataFrame, pieces: int) -> pl.DataFrame:
    """`frame` with every column in `pieces` buffers, as a multi-file scan hands it over."""
    step = -(-frame.height // pieces)
    return pl.concat([frame.slice(i, step) for i in range(0, frame.height, step)], rechunk=False)


def test_a_read_in_order_is_joined_into_one_buffer_per_column_not_reordered(day_bars: pl.DataFrame) -> None:
    in_order = day_bars.sort("symbol", "ts")
    chunked = _chunked(in_order, 7)
    assert chunked["close"].n_chunks() == 7
    got = store.in_symbol_ts_order(chunked)
    assert_frame_equal(got, in_order)
    assert {column.n_chunks() for column in got.iter_columns()} == {1}  # what a backtest reads as views


def test_rows_out_of_symbol_ts_order_are_sorted(day_bars: pl.DataFrame) -> None:
    in_order = day_bars.sort("symbol", "ts")
    symbols = in_order["symbol"].unique(maintain_order=True).to_list()
    # Each symbol's rows in order, but the symbols reversed; then one symbol with two rows swapped.
    by_symbol_reversed = pl.concat([in_order.filter(pl.col("symbol") == s) for s in reversed(symbols)])
    assert_frame_equal(store.in_symbol_ts_order(by_symbol_reversed), in_order)
    swapped = pl.concat([in_order.slice(0, 5), in_order.slice(6, 1), in_order.slice(5, 1), in_order.slice(7)])
    assert_frame_equal(store.in_symbol_ts_order(_chunked(swapped, 3)), in_order)


def test_a_null_key_is_placed_where_a_sort_places_it(day_bars: pl.DataFrame) -> None:
    in_order = day_bars.sort("symbol", "ts")
    with_null = in_order.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("ts")).alias("ts"))
    assert_frame_equal(store.in_symbol_ts_order(with_null), with_null.sort("symbol", "ts"))


def test_read_bars_of_many_files_gives_one_buffer_per_column(tmp_path: Path) -> None:
    bars = SyntheticSource(seed=3).fetch(["MSFT", "AAPL"], "1m", datetime(2024, 11, 25, tzinfo=UTC), datetime(2024, 11, 28, tzinfo=UTC))
    for (symbol, day), part in bars.group_by("symbol", pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()):
        store.replace_partition(tmp_path, "bars", "1m", str(symbol), str(day), part)
    got = store.read_bars(tmp_path, ["MSFT", "AAPL"], "1m")
    assert_frame_equal(got, bars.sort("symbol", "ts"), check_dtypes=False)
    assert {column.n_chunks() for column in got.iter_columns()} == {1}
