"""A user's own CSV/Parquet files: column mapping, timezones, and errors that name file, line, column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake.calendar import session_bounds
from lake.errors import SourceError, UnknownSymbolError
from lake.sources.fallback import FallbackSource
from lake.sources.files import FileSource
from lake.sources.synthetic import SyntheticSource

DAY = session_bounds("2024-11-27")


def _vendor_csv(bars: pl.DataFrame, path: Path) -> Path:
    """The bars as a vendor might ship them: other column names, New York wall-clock time."""
    bars.select(
        pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None).alias("Time"),
        pl.col("symbol").alias("Ticker"),
        pl.col("open").alias("O"),
        pl.col("high").alias("H"),
        pl.col("low").alias("L"),
        pl.col("close").alias("C"),
        pl.col("volume").alias("Vol"),
    ).write_csv(path)
    return path


MAP = {"Time": "ts", "Ticker": "symbol", "O": "open", "H": "high", "L": "low", "C": "close", "Vol": "volume"}


def test_csv_with_column_map_and_local_time(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    _vendor_csv(day_bars, tmp_path / "bars.csv")
    got = FileSource(str(tmp_path / "*.csv"), column_map=MAP).fetch(["MSFT"], "1m", *DAY)
    want = day_bars.filter(pl.col("symbol") == "MSFT").with_columns(pl.lit(None, pl.Float64).alias("vwap"), pl.lit(None, pl.Int64).alias("trade_count"))
    assert_frame_equal(got, want)


def test_parquet_files_and_symbol_from_file_name(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    aapl = day_bars.filter(pl.col("symbol") == "AAPL")
    aapl.drop("symbol").write_parquet(tmp_path / "aapl.parquet")
    assert_frame_equal(FileSource(str(tmp_path / "*.parquet")).fetch(["AAPL"], "1m", *DAY), aapl)


def test_a_malformed_value_names_file_line_and_column(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    path = _vendor_csv(day_bars.head(30), tmp_path / "bars.csv")
    lines = path.read_text().splitlines()
    cells = lines[12].split(",")
    cells[3] = "123O"  # the H column, with a letter O typed for a zero
    lines[12] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"bars\.csv line 13, column 'high': cannot parse '123O'"):
        FileSource(str(path), column_map=MAP).fetch(["AAPL"], "1m", *DAY)


def test_missing_columns_and_symbols_are_named(tmp_path: Path, day_bars: pl.DataFrame) -> None:
    path = _vendor_csv(day_bars, tmp_path / "bars.csv")
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['ts', 'open'"):
        FileSource(str(path)).fetch(["AAPL"], "1m", *DAY)
    with pytest.raises(UnknownSymbolError, match="TSLA"):
        FileSource(str(path), column_map=MAP).fetch(["TSLA"], "1m", *DAY)
    with pytest.raises(SourceError, match="no file matches"):
        FileSource(str(tmp_path / "nothing*.csv")).fetch(["AAPL"], "1m", *DAY)


def test_fallback_serves_from_the_next_source_and_counts_it(tmp_path: Path) -> None:
    chain = FallbackSource([FileSource(str(tmp_path / "absent*.csv")), SyntheticSource()])
    bars = chain.fetch(["AAPL"], "1m", *DAY)
    assert bars.height == 390 and chain.fallbacks == 1 and chain.last_used == "synthetic"
    broken = FallbackSource([FileSource(str(tmp_path / "absent*.csv"))])
    with pytest.raises(SourceError, match="every bar source failed: files: files: no file matches"):
        broken.fetch(["AAPL"], "1m", *DAY)
