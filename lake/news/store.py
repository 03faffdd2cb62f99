"""Where news lives in the lake, and the one way to read it: as of a decision time.

Layout: <root>/news/date=YYYY-MM-DD/part.parquet (one file per session day, every symbol of the
universe; zstd) and <root>/quarantine/news/date=YYYY-MM-DD/part.parquet (the failing rows with
`check` and `reason`). Both are replaced atomically (lake.store's temp file + rename, or an object
store's staged upload + copy), so a rerun of a day rewrites the same bytes and a crash leaves the
previous version. The root is a local folder or an `ObjectPath` (lake/filesystem.py).

Point in time: a row is stored in its latest version only. A headline edited after the decision
time therefore carries text the decision could not have seen; `read_news` leaves it out, as it
leaves out anything created after the decision time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import overload
from zoneinfo import ZoneInfo

import polars as pl

from lake.calendar import EXCHANGE_TZ
from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.news.schema import NEWS_SCHEMA, SORT_KEY, conform_news, empty_news
from lake.store import PART_FILE, QUARANTINE, scan_files, write_frame_atomic

NEWS = "news"
DEFAULT_LOOKBACK = timedelta(days=3)
# A day's window runs to 00:00 of the next session's day: at most a long weekend plus holidays.
_MAX_WINDOW_DAYS = 6


NewsRoot = Path | str | ObjectPath  # a string is a local path


def _base(root: NewsRoot) -> Path | ObjectPath:
    return root if isinstance(root, ObjectPath) else Path(root)


@overload
def news_path(root: Path | str, day: date | str) -> Path: ...
@overload
def news_path(root: ObjectPath, day: date | str) -> ObjectPath: ...
def news_path(root: NewsRoot, day: date | str) -> Path | ObjectPath:
    return _base(root) / NEWS / f"date={_iso(day)}" / PART_FILE


@overload
def news_quarantine_path(root: Path | str, day: date | str) -> Path: ...
@overload
def news_quarantine_path(root: ObjectPath, day: date | str) -> ObjectPath: ...
def news_quarantine_path(root: NewsRoot, day: date | str) -> Path | ObjectPath:
    return _base(root) / QUARANTINE / NEWS / f"date={_iso(day)}" / PART_FILE


def _iso(day: date | str) -> str:
    try:
        return (date.fromisoformat(day) if isinstance(day, str) else day).isoformat()
    except ValueError as exc:
        raise LakeError(f"news partition {day!r} is not a date (YYYY-MM-DD)") from exc


def _replace(path: Path | ObjectPath, df: pl.DataFrame) -> Path | ObjectPath | None:
    if df.is_empty():
        path.unlink(missing_ok=True)
        return None
    return write_frame_atomic(df, path)


def write_news_day(root: NewsRoot, day: date | str, clean: pl.DataFrame, quarantine: pl.DataFrame) -> Path | ObjectPath | None:
    """Makes the day's partition hold exactly `clean` (sorted) and its quarantine `quarantine`;
    an empty frame removes the file. Returns the clean file's path (None when there is none)."""
    _replace(news_quarantine_path(root, day), quarantine)
    return _replace(news_path(root, day), conform_news(clean, where=f"news {day}").sort(list(SORT_KEY)))


def news_days(root: NewsRoot) -> list[date]:
    """The session days that have a news partition, in order."""
    base = _base(root) / NEWS
    if isinstance(base, ObjectPath):  # one listing; a staged `.part.parquet.*.tmp` is never a partition
        found = [p.parent for p in base.files() if p.name == PART_FILE and p.parent.parent == base]
        return sorted(date.fromisoformat(folder.name[5:]) for folder in found if folder.name.startswith("date="))
    if not base.is_dir():
        return []
    return sorted(date.fromisoformat(p.name[5:]) for p in base.glob("date=*") if (p / PART_FILE).is_file())


def read_news(
    root: NewsRoot,
    symbols: Sequence[str] | None,
    until: datetime,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> pl.DataFrame:
    """Headlines of `symbols` (None: all) created in [until - lookback, until] whose stored version
    was already there at `until` (updated_at <= until), sorted by created_at, id, symbol.

    Only the day partitions that can hold such rows are opened. `until` must be timezone-aware."""
    if until.tzinfo is None:
        raise LakeError(f"read_news: until {until} is timezone-naive; pass an aware datetime")
    if lookback < timedelta(0):
        raise LakeError(f"read_news: lookback {lookback} is negative")
    until = until.astimezone(UTC)
    since = until - lookback
    local = ZoneInfo(EXCHANGE_TZ)
    first, last = since.astimezone(local).date() - timedelta(days=_MAX_WINDOW_DAYS), until.astimezone(local).date()
    files = [news_path(root, d) for d in news_days(root) if first <= d <= last]
    if not files:
        return empty_news()
    scan = scan_files(files).filter(
        (pl.col("created_at") >= since) & (pl.col("created_at") <= until) & (pl.col("updated_at") <= until)
    )
    if symbols is not None:
        scan = scan.filter(pl.col("symbol").is_in(list(symbols)))
    return conform_news(scan.collect(), where="lake news").sort(list(SORT_KEY))


def read_news_quarantine(root: NewsRoot, day: date | str) -> pl.DataFrame:
    path = news_quarantine_path(root, day)
    if not path.is_file():
        return pl.DataFrame(schema={**NEWS_SCHEMA, "check": pl.String(), "reason": pl.String()})
    return pl.read_parquet(path.read_bytes() if isinstance(path, ObjectPath) else path)
