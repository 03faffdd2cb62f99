"""Bars from CSV or Parquet files a user already has.

A column map renames the file's columns to ours; naive timestamps are read in the files' timezone.
A value that does not parse, or a row with more fields than the header, is an error naming the file
and line (never a silent drop, never a guess at which field is extra); a row with too few fields reads
its absent fields as missing values, which validation quarantines with the reason, as it does rows
that parse but break a rule (high < low, a weekend bar...). Daily bars are stamped at their
session's open whatever time of day the file gives (often none: a bare date is midnight).
"""

from __future__ import annotations

import csv
import glob
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from lake.calendar import restamp_daily
from lake.errors import SourceError, UnknownSymbolError
from lake.schema import BAR_SCHEMA, REQUIRED_COLUMNS, check_timeframe, conform_bars, empty_bars

_NUMERIC = ("open", "high", "low", "close", "volume", "vwap", "trade_count")


class FileSource:
    name = "files"

    def __init__(
        self,
        pattern: str,
        *,
        timeframe: str = "1m",
        timezone: str = "America/New_York",
        column_map: Mapping[str, str] | None = None,
        exchange: str = "XNYS",
    ) -> None:
        self.pattern = pattern
        self.timeframe = check_timeframe(timeframe)
        self.timezone = timezone
        self.column_map = dict(column_map or {})
        self.exchange = exchange

    def files(self) -> list[Path]:
        found = sorted(Path(p) for p in glob.glob(str(Path(self.pattern).expanduser()), recursive=True))
        if not found:
            raise SourceError(f"files: no file matches {self.pattern!r}")
        return found

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        check_timeframe(timeframe)
        frames = [self.read_file(path, timeframe) for path in self.files()]
        bars = pl.concat(frames) if frames else empty_bars()
        known = set(bars["symbol"].unique().to_list())
        unknown = [s for s in symbols if s not in known]
        if unknown:
            raise UnknownSymbolError(f"files: no bars for {unknown} in {self.pattern!r} (symbols there: {sorted(known)[:10]})")
        bars = bars.filter(pl.col("symbol").is_in(list(symbols)) & (pl.col("timeframe") == timeframe))
        if timeframe == "1d":
            bars = restamp_daily(bars, self.exchange)
        # Rows outside [start, end) are another partition's (the ingest windows tile time, weekends
        # and nights included), so leaving them here loses none.
        return bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).sort("symbol", "ts")

    def read_file(self, path: Path, timeframe: str) -> pl.DataFrame:
        if path.suffix.lower() == ".parquet":
            raw = pl.read_parquet(path)
            line_offset = 0  # a Parquet "line" is its row number, from 0
        else:
            try:
                raw = pl.read_csv(path, infer_schema=False)
            except pl.exceptions.PolarsError as exc:
                ragged = _first_long_row(path)
                raise SourceError(ragged or f"files: cannot read {path}: {exc}") from None
            line_offset = 2  # the header is line 1
        raw = raw.rename({k: v for k, v in self.column_map.items() if k in raw.columns})
        if "symbol" not in raw.columns:
            raw = raw.with_columns(pl.lit(path.stem.upper()).alias("symbol"))
        if "timeframe" not in raw.columns:
            raw = raw.with_columns(pl.lit(timeframe).alias("timeframe"))
        missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
        if missing:
            raise SourceError(f"files: {path} lacks column(s) {missing} (has {raw.columns}); map them with column_map")
        parsed = raw.with_columns(self._ts_expr(raw), *[pl.col(c).cast(BAR_SCHEMA[c], strict=False) for c in _NUMERIC if c in raw.columns])
        self._raise_on_unparsed(path, raw, parsed, line_offset)
        no_time = parsed["ts"].is_null()
        if no_time.any():  # it would fit no partition's window: refuse it rather than lose it
            row = int(no_time.arg_max())  # type: ignore[arg-type]
            raise SourceError(f"files: {path} line {row + line_offset}: no timestamp ({int(no_time.sum())} row(s) without one); every row needs its ts")
        return conform_bars(parsed, where=str(path))

    def _ts_expr(self, raw: pl.DataFrame) -> pl.Expr:
        ts = pl.col("ts")
        dtype = raw.schema["ts"]
        if isinstance(dtype, pl.Datetime):
            return (ts.dt.replace_time_zone(self.timezone) if dtype.time_zone is None else ts).dt.convert_time_zone("UTC")
        text = ts.cast(pl.String)
        has_offset = raw["ts"].cast(pl.String).drop_nulls().str.contains(r"(Z|[+-]\d{2}:?\d{2})$").any()
        if has_offset:
            return text.str.to_datetime(strict=False, time_zone="UTC", time_unit="us").alias("ts")
        return text.str.to_datetime(strict=False, time_unit="us").dt.replace_time_zone(self.timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC").alias("ts")

    @staticmethod
    def _raise_on_unparsed(path: Path, raw: pl.DataFrame, parsed: pl.DataFrame, line_offset: int) -> None:
        for column in ("ts", *(c for c in _NUMERIC if c in raw.columns)):
            bad = parsed[column].is_null() & raw[column].is_not_null() & (raw[column].cast(pl.String).str.strip_chars() != "")
            if bad.any():
                row = int(bad.arg_max())  # type: ignore[arg-type]
                raise SourceError(
                    f"files: {path} line {row + line_offset}, column {column!r}: cannot parse {raw[column][row]!r} "
                    f"({int(bad.sum())} bad value(s) in that column)"
                )


def _first_long_row(path: Path) -> str | None:
    """Names the first line with more fields than the header (polars' own error names no line)."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        for row in reader:
            if len(row) > len(header):
                return (
                    f"files: {path} line {reader.line_num}: {len(row)} fields where the header {header} has {len(header)}: "
                    f"{','.join(row)[:120]}; fix or remove that row"
                )
    return None


def parse_column_map(text: str) -> dict[str, str]:
    """`ts=Date,open=Open,...` (our column = the file's header) as FileSource's {file's: ours} map."""
    columns = set(BAR_SCHEMA)
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ours, sep, theirs = (s.strip() for s in item.partition("="))
        if not sep or not ours or not theirs:
            raise SourceError(f"column map item {item!r} is not OURS=THEIRS (e.g. ts=Date)")
        if ours not in columns:
            raise SourceError(f"column map: {ours!r} is not a bar column; expected one of {sorted(columns)}")
        if theirs in out:
            raise SourceError(f"column map: the file's column {theirs!r} is mapped twice")
        out[theirs] = ours
    if not out:
        raise SourceError(f"column map {text!r} maps nothing; e.g. ts=Date,open=Open,high=High,low=Low,close=Close,volume=Volume")
    return out
