"""Retention in the lake: quarantined rows and end-of-day reports older than a number of days go.

Age comes from what a file is about, named in its path (a quarantine partition's `date=`/`year=`
folder, a report's `YYYY-MM-DD.md`), never from file times, and is measured against a `now` the
caller passes: the same lake and the same `now` remove the same files. Anything whose name carries
no date is left alone. Clean bars, features and research outputs are never touched here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from lake.calendar import EXCHANGE_TZ
from lake.errors import LakeError
from lake.store import QUARANTINE

REPORTS = Path("reports") / "eod"
_REPORT_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.md$")


@dataclass
class Removed:
    """What a retention pass deleted: the files and the bytes they held."""

    files: list[Path] = field(default_factory=list)
    bytes: int = 0

    def add(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return  # another pass (or a rewrite) took it first
        self.files.append(path)
        self.bytes += size


def cutoff_date(now: datetime, days: int) -> date:
    """The first exchange date kept: anything about an earlier date is older than `days`."""
    if now.tzinfo is None:
        raise LakeError(f"retention now={now} is timezone-naive; pass an aware datetime")
    if days < 1:
        raise LakeError(f"retention of {days} days: expected at least 1 day")
    return now.astimezone(ZoneInfo(EXCHANGE_TZ)).date() - timedelta(days=days)


def _period_last_day(name: str) -> date | None:
    """The last exchange date a `date=`/`year=` partition folder holds rows of (None: not one)."""
    key, _, value = name.partition("=")
    try:
        if key == "date":
            return date.fromisoformat(value)
        if key == "year" and len(value) == 4:
            return date(int(value), 12, 31)
    except ValueError:
        return None
    return None


def expired_quarantine(root: Path, now: datetime, days: int) -> list[Path]:
    """The quarantine partition files whose whole period ended before the cutoff (a year's folder
    goes only once its 31 December is older than `days`)."""
    keep_from = cutoff_date(now, days)
    base = Path(root) / QUARANTINE
    out: list[Path] = []
    for period in sorted(base.glob("timeframe=*/symbol=*/*")):
        last = _period_last_day(period.name)
        if last is not None and last < keep_from and period.is_dir():
            out.extend(sorted(p for p in period.iterdir() if p.is_file()))
    return out


def expired_reports(root: Path, now: datetime, days: int) -> list[Path]:
    """The end-of-day reports (`reports/eod/YYYY-MM-DD.md`) of days before the cutoff."""
    keep_from = cutoff_date(now, days)
    folder = Path(root) / REPORTS
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        match = _REPORT_RE.match(path.name)
        if match and date.fromisoformat(match.group(1)) < keep_from:
            out.append(path)
    return out


def _remove(paths: list[Path], stop_at: Path) -> Removed:
    removed = Removed()
    for path in paths:
        removed.add(path)
        _prune_empty_dirs(path.parent, stop_at)
    return removed


def _prune_empty_dirs(folder: Path, stop_at: Path) -> None:
    """Empty partition folders left behind go too, up to (not including) `stop_at`."""
    while folder != stop_at and stop_at in folder.parents:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            return
        folder = folder.parent


def prune_quarantine(root: Path, now: datetime, days: int) -> Removed:
    """Deletes quarantine partitions older than `days` (see `expired_quarantine`)."""
    return _remove(expired_quarantine(root, now, days), Path(root) / QUARANTINE)


def prune_reports(root: Path, now: datetime, days: int) -> Removed:
    """Deletes end-of-day reports older than `days` (see `expired_reports`)."""
    return _remove(expired_reports(root, now, days), Path(root) / REPORTS)
