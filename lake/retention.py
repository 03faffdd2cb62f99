"""Retention in the lake: quarantined rows and end-of-day reports older than a number of days go.

Age comes from what a file is about, named in its path (a quarantine partition's `date=`/`year=`
folder, a report's `YYYY-MM-DD.md`), never from file times, and is measured against a `now` the
caller passes: the same lake and the same `now` remove the same files. Anything whose name carries
no date is left alone. Clean bars, features and research outputs are never touched here.

The lake is a local folder or an object store's prefix (`ObjectPath`). On an object store the
empty folder markers a delete leaves are not removed: they hold no bytes and no reader takes them
for data, and removing a "folder" there is not atomic against a writer putting a new object in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar, overload
from zoneinfo import ZoneInfo

from lake.calendar import EXCHANGE_TZ
from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.store import QUARANTINE

REPORTS = Path("reports") / "eod"
_REPORT_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.md$")

P = TypeVar("P", Path, ObjectPath)  # the lake's root and its files: local, or objects of one store


@dataclass
class Removed(Generic[P]):
    """What a retention pass deleted: the files and the bytes they held."""

    files: list[P] = field(default_factory=list)
    bytes: int = 0

    def add(self, path: P) -> None:
        try:
            size = path.size() if isinstance(path, ObjectPath) else path.stat().st_size
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


@overload
def expired_quarantine(root: Path, now: datetime, days: int) -> list[Path]: ...
@overload
def expired_quarantine(root: ObjectPath, now: datetime, days: int) -> list[ObjectPath]: ...
def expired_quarantine(root: Path | ObjectPath, now: datetime, days: int) -> list[Path] | list[ObjectPath]:
    """The quarantine partition files whose whole period ended before the cutoff (a year's folder
    goes only once its 31 December is older than `days`)."""
    keep_from = cutoff_date(now, days)
    if isinstance(root, ObjectPath):
        return _expired_quarantine_objects(root / QUARANTINE, keep_from)
    base = Path(root) / QUARANTINE
    out: list[Path] = []
    for period in sorted(base.glob("timeframe=*/symbol=*/*")):
        last = _period_last_day(period.name)
        if last is not None and last < keep_from and period.is_dir():
            out.extend(sorted(p for p in period.iterdir() if p.is_file()))
    return out


def _expired_quarantine_objects(base: ObjectPath, keep_from: date) -> list[ObjectPath]:
    """`expired_quarantine` on an object store: one listing, the same `timeframe=*/symbol=*/<period>/<file>` shape."""
    out = []
    for obj in base.files():
        parts = obj.key[len(base.key) + 1 :].split("/")
        if len(parts) != 4 or not (parts[0].startswith("timeframe=") and parts[1].startswith("symbol=")):
            continue
        last = _period_last_day(parts[2])
        if last is not None and last < keep_from:
            out.append(obj)
    return out


@overload
def expired_reports(root: Path, now: datetime, days: int) -> list[Path]: ...
@overload
def expired_reports(root: ObjectPath, now: datetime, days: int) -> list[ObjectPath]: ...
def expired_reports(root: Path | ObjectPath, now: datetime, days: int) -> list[Path] | list[ObjectPath]:
    """The end-of-day reports (`reports/eod/YYYY-MM-DD.md`) of days before the cutoff."""
    keep_from = cutoff_date(now, days)
    if isinstance(root, ObjectPath):
        folder = root / REPORTS
        return [p for p in folder.files() if p.parent == folder and _report_expired(p.name, keep_from)]
    local = Path(root) / REPORTS
    return [p for p in sorted(local.iterdir()) if _report_expired(p.name, keep_from)] if local.is_dir() else []


def _report_expired(name: str, keep_from: date) -> bool:
    match = _REPORT_RE.match(name)
    return match is not None and date.fromisoformat(match.group(1)) < keep_from


def _remove(paths: list[P], stop_at: P) -> Removed[P]:
    removed: Removed[P] = Removed()
    for path in paths:
        removed.add(path)
        if isinstance(path, Path) and isinstance(stop_at, Path):
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


@overload
def prune_quarantine(root: Path, now: datetime, days: int) -> Removed[Path]: ...
@overload
def prune_quarantine(root: ObjectPath, now: datetime, days: int) -> Removed[ObjectPath]: ...
def prune_quarantine(root: Path | ObjectPath, now: datetime, days: int) -> Removed[Path] | Removed[ObjectPath]:
    """Deletes quarantine partitions older than `days` (see `expired_quarantine`)."""
    if isinstance(root, ObjectPath):
        return _remove(expired_quarantine(root, now, days), root / QUARANTINE)
    return _remove(expired_quarantine(root, now, days), Path(root) / QUARANTINE)


@overload
def prune_reports(root: Path, now: datetime, days: int) -> Removed[Path]: ...
@overload
def prune_reports(root: ObjectPath, now: datetime, days: int) -> Removed[ObjectPath]: ...
def prune_reports(root: Path | ObjectPath, now: datetime, days: int) -> Removed[Path] | Removed[ObjectPath]:
    """Deletes end-of-day reports older than `days` (see `expired_reports`)."""
    if isinstance(root, ObjectPath):
        return _remove(expired_reports(root, now, days), root / REPORTS)
    return _remove(expired_reports(root, now, days), Path(root) / REPORTS)
