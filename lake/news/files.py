"""Headlines from files a user already has: CSV or JSON lines.

Header (CSV) or keys (JSON lines), one row per (article, symbol):
    id,symbol,created_at,headline[,updated_at,summary,source,url]
JSON lines may instead carry `symbols` as a list (Alpaca's own article shape, e.g. a saved API
answer), one row per listed symbol. Times need an offset (`Z`, `-05:00`); one without is read in the
files' timezone (default America/New_York). A line that is not JSON, a time that does not parse or a
row without `created_at` is an error naming the file and line (never a silent drop); every other row
reaches validation, which quarantines what breaks a rule with the reason. An empty `updated_at` is the creation time (never edited).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from lake.errors import SourceError
from lake.news.schema import NEWS_SCHEMA, REQUIRED, SORT_KEY, TIME_COLUMNS, conform_news, empty_news

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


class NewsFileSource:
    name = "files"

    def __init__(self, pattern: str, *, timezone: str = "America/New_York") -> None:
        self.pattern = pattern
        self.timezone = timezone

    def files(self) -> list[Path]:
        found = sorted(Path(p) for p in glob.glob(str(Path(self.pattern).expanduser()), recursive=True))
        if not found:
            raise SourceError(f"news files: no file matches {self.pattern!r}")
        return found

    def fetch_news(self, symbols: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame:
        """Every file's rows created in [start, end). Rows about other symbols are kept (validation
        quarantines the ones outside the universe with the reason): `symbols` does not filter."""
        frames = [self.read_file(path) for path in self.files()]
        news = pl.concat(frames) if frames else empty_news()
        return news.filter((pl.col("created_at") >= start) & (pl.col("created_at") < end)).sort(list(SORT_KEY))

    def read_file(self, path: Path) -> pl.DataFrame:
        if path.suffix.lower() in JSON_SUFFIXES:
            raw, first_line = _read_json_lines(path), 1
        else:
            try:
                raw = pl.read_csv(path, infer_schema=False)
            except pl.exceptions.PolarsError as exc:
                raise SourceError(f"news files: cannot read {path}: {exc}") from None
            first_line = 2  # the header is line 1
        missing = [c for c in REQUIRED if c not in raw.columns]
        if missing:
            raise SourceError(f"news files: {path} lacks column(s) {missing} (has {raw.columns}); header: id,symbol,created_at,headline[,updated_at,summary,source,url]")
        parsed = raw.with_columns(*[self._time(raw, c) for c in TIME_COLUMNS if c in raw.columns])
        for column in (c for c in TIME_COLUMNS if c in raw.columns):
            bad = parsed[column].is_null() & raw[column].is_not_null() & (raw[column].str.strip_chars() != "")
            if bad.any():
                row = int(bad.arg_max())  # type: ignore[arg-type]
                raise SourceError(f"news files: {path} line {_line(raw, row, first_line)}, column {column!r}: cannot parse {raw[column][row]!r} as a time")
        no_time = parsed["created_at"].is_null()
        if no_time.any():  # it would fit no day's partition: refuse it rather than lose it
            row = int(no_time.arg_max())  # type: ignore[arg-type]
            raise SourceError(f"news files: {path} line {_line(raw, row, first_line)}: no created_at; every row needs one")
        if "updated_at" in parsed.columns:  # an empty updated_at: never edited
            parsed = parsed.with_columns(pl.coalesce("updated_at", "created_at").alias("updated_at"))
        return conform_news(parsed, where=str(path))

    def _time(self, raw: pl.DataFrame, column: str) -> pl.Expr:
        text = pl.col(column).str.strip_chars()
        with_offset = text.str.contains(r"(Z|[+-]\d{2}:?\d{2})$")
        # Each kind parsed apart: polars infers one format per column from its first value.
        aware = pl.when(with_offset).then(text).str.to_datetime(strict=False, time_zone="UTC", time_unit="us")
        naive = (
            pl.when(~with_offset).then(text).str.to_datetime(strict=False, time_unit="us")
            .dt.replace_time_zone(self.timezone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
        )
        return pl.when(with_offset).then(aware).otherwise(naive).alias(column)


def _line(raw: pl.DataFrame, row: int, first_line: int) -> int:
    return int(raw["_line"][row]) if "_line" in raw.columns else row + first_line


def _read_json_lines(path: Path) -> pl.DataFrame:
    """One JSON object per line; `symbols` lists become one row each. All values as text."""
    rows: list[dict[str, Any]] = []
    with open(path) as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SourceError(f"news files: {path} line {number}: not JSON ({exc.msg} at character {exc.pos})") from None
            if not isinstance(item, dict):
                raise SourceError(f"news files: {path} line {number}: expected a JSON object, got {type(item).__name__}")
            listed = item.pop("symbols", None)
            if listed is not None and not isinstance(listed, list):
                raise SourceError(f"news files: {path} line {number}: 'symbols' must be a list, got {listed!r}")
            for symbol in listed if listed is not None else [item.get("symbol")]:
                row = {k: None if item.get(k) is None else str(item[k]) for k in NEWS_SCHEMA if k != "symbol"}
                rows.append({**row, "symbol": symbol, "_line": number})
    schema: dict[str, Any] = {k: pl.String() for k in NEWS_SCHEMA} | {"_line": pl.Int64()}
    return pl.DataFrame(rows, schema=schema)
