"""Where news lives in the lake, and the one way to read it: as of a decision time.

Layout: <root>/news/date=YYYY-MM-DD/part.parquet (one file per session day, every symbol of the
universe; zstd) and <root>/quarantine/news/date=YYYY-MM-DD/part.parquet (the failing rows with
`check` and `reason`). Both are replaced atomically (lake.store's temp file + rename), so a rerun
of a day rewrites the same bytes and a crash leaves the previous version.

Point in time: a row is stored in its latest version only. A headline edited after the decision
time therefore carries text the decision could not have seen; `read_news` leaves it out, as it
leaves out anything created after the decision time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from lake.calendar import EXCHANGE_TZ
from lake.errors import LakeError
from lake.news.schema import NEWS_SCHEMA, SORT_KEY, conform_news, empty_news
from lake.store import PART_FILE, QUARANTINE, write_frame_atomic

NEWS = "news"
DEFAULT_LOOKBACK = timedelta(days=3)
# A day's window runs to 00:00 of the next session's day: at most a long weekend plus holidays.
_MAX_WINDOW_DAYS = 6


def news_path(root: Path, day: date | str) -> Path:
    return Path(root) / NEWS / f"date={_iso(day)}" / PART_FILE


def news_quarantine_path(root: Path, day: date | str) -> Path:
    return Path(root) / QUARANTINE / NEWS / f"date={_iso(day)}" / PART_FILE


def _iso(day: date | str) -> str:
    try:
        return (date.fromisoformat(day) if isinstance(day, str) else day).isoformat()
    except ValueError as exc:
        raise LakeError(f"news partition {day!r} is not a date (YYYY-MM-DD)") from exc


def _replace(path: Path, df: pl.DataFrame) -> Path | None:
    if df.is_empty():
        path.unlink(missing_ok=True)
        return None
    return write_frame_atomic(df, path)


def write_news_day(root: Path, day: date | str, clean: pl.DataFrame, quarantine: pl.DataFrame) -> Path | None:
    """Makes the day's partition hold exactly `clean` (sorted) and its quarantine `quarantine`;
    an empty frame removes the file. Returns the clean file's path (None when there is none)."""
    _replace(news_quarantine_path(root, day), quarantine)
    return _replace(news_path(root, day), conform_news(clean, where=f"news {day}").sort(list(SORT_KEY)))


def news_days(root: Path) -> list[date]:
    """The session days that have a news partition, in order."""
    base = Path(root) / NEWS
    if not base.is_dir():
        return []
    return sorted(date.fromisoformat(p.name[5:]) for p in base.glob("date=*") if (p / PART_FILE).is_file())


def read_news(
    root: Path,
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
    scan = pl.scan_parquet(files, hive_partitioning=False).filter(
        (pl.col("created_at") >= since) & (pl.col("created_at") <= until) & (pl.col("updated_at") <= until)
    )
    if symbols is not None:
        scan = scan.filter(pl.col("symbol").is_in(list(symbols)))
    return conform_news(scan.collect(), where="lake news").sort(list(SORT_KEY))


def read_news_quarantine(root: Path, day: date | str) -> pl.DataFrame:
    path = news_quarantine_path(root, day)
    return pl.read_parquet(path) if path.is_file() else pl.DataFrame(schema={**NEWS_SCHEMA, "check": pl.String(), "reason": pl.String()})
