"""Compaction: a symbol-month's day partitions folded into one month file, so files stay few.

Day partitions stay what ingest writes (one atomic file per symbol x day: a run per partition and a
backfill's range run write the same files). Compaction then rewrites `month=YYYY-MM/part.parquet`
atomically with the month's rows and removes the day files it folded. Readers (lake/store.py
`scan_layout`) let a day file win over its month file for that day, so every state in between reads
the same: the month written but the day files not yet removed (a killed compaction) shows each bar
once; a day re-ingested after compaction (a new day file) replaces exactly that day, and a day
re-ingested with no rows leaves an empty day file (a tombstone) that hides the month's rows of it.

Only day files whose rows all fall on their own exchange date are folded (clean bars always do:
rows outside the session are quarantined); any other day file stays as it is and keeps winning.
A day file replaced while a compaction runs is left in place (its stamp changed), so it still wins.
One compaction of a symbol-month at a time (the compaction asset runs in one run).

On an object store (`ObjectPath`) the same steps run on objects: one listing finds the day files,
the month object is written as every lake write is (staged, then copied into place in one
server-side copy), and a day object is removed only if its bytes are still those folded (their
SHA-256 compared on a fresh read: S3 has no inode, and its modification time has one-second
resolution). A delete leaves pyarrow's empty folder marker (`date=D/`, zero bytes): no reader or
listing of the lake takes it for data (lake/filesystem.py).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

import polars as pl

from lake.filesystem import ObjectPath
from lake.store import PART_FILE, LakeRoot, exchange_date, partition_path, write_frame_atomic

Stamp = tuple[int, int, int]  # inode, size, mtime in ns: a day file replaced (renamed over) changes it
K = TypeVar("K", Path, ObjectPath)  # a day file: local, or an object


@dataclass(frozen=True)
class MonthCompaction:
    """What compacting one symbol-month did: day files folded into the month file, and kept."""

    symbol: str
    month: str
    folded: int
    kept: int
    rows: int


def _stamp(path: Path) -> Stamp:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _on_its_day(frame: pl.DataFrame, day: date) -> bool:
    return frame.is_empty() or bool(frame.select((exchange_date() == day).all()).item())


def _remove_folded(stamps: dict[Path, Stamp]) -> int:
    """Removes the folded day files still as they were read; a day file replaced since stays."""
    removed = 0
    for path, stamp in stamps.items():
        try:
            if _stamp(path) != stamp:
                continue
            path.unlink()
            removed += 1
            path.parent.rmdir()  # the empty date= folder: `status` and listings count folders
        except (FileNotFoundError, OSError):
            continue
    return removed


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove_folded_objects(digests: dict[ObjectPath, str]) -> int:
    """`_remove_folded` on an object store: a day object goes only if its bytes are still those folded."""
    removed = 0
    for path, digest in digests.items():
        try:
            if _digest(path.read_bytes()) != digest:
                continue  # replaced since it was read: it stays, and wins over the month's rows of its day
            path.unlink(missing_ok=True)
            removed += 1
        except OSError:  # gone already, or the store did not answer: a day object left in place still reads right
            continue
    return removed


def _merge(frames: Mapping[K, pl.DataFrame], days: Mapping[K, date], month: pl.DataFrame | None) -> tuple[list[K], pl.DataFrame | None]:
    """(the day files that fold, the month's rows after folding them; None: no rows)."""
    folded = [key for key, frame in frames.items() if _on_its_day(frame, days[key])]
    parts = [frames[key] for key in folded if frames[key].height]
    if month is not None:  # its rows of days with a day file are replaced by that file
        parts.insert(0, month.filter(~exchange_date().is_in(list(days.values()))))
    merged = pl.concat(parts, how="diagonal_relaxed").sort("ts") if parts else None
    return folded, None if merged is None or merged.is_empty() else merged


def compact_month(
    root: LakeRoot,
    dataset: str,
    timeframe: str,
    symbol: str,
    month: str,
    *,
    remove: Callable[[dict[Path, Stamp]], int] = _remove_folded,
    remove_objects: Callable[[dict[ObjectPath, str]], int] = _remove_folded_objects,
) -> MonthCompaction:
    """Folds `symbol`'s day files of `month` (YYYY-MM) into its month file, atomically."""
    if isinstance(root, ObjectPath):
        return _compact_object_month(root, dataset, timeframe, symbol, month, remove_objects)
    month_file = partition_path(root, dataset, timeframe, symbol, month)
    day_files = sorted(month_file.parent.parent.glob(f"date={month}-*/{PART_FILE}"))
    if not day_files:
        return MonthCompaction(symbol, month, 0, 0, 0)
    stamps = {path: _stamp(path) for path in day_files}
    days = {path: date.fromisoformat(path.parent.name[5:]) for path in day_files}
    frames = {path: pl.read_parquet(path) for path in day_files}
    folded, merged = _merge(frames, days, pl.read_parquet(month_file) if month_file.exists() else None)
    if merged is None:
        month_file.unlink(missing_ok=True)
    else:
        write_frame_atomic(merged, month_file)
    remove({path: stamps[path] for path in folded})
    return MonthCompaction(symbol, month, len(folded), len(day_files) - len(folded), merged.height if merged is not None else 0)


def _day_objects(folder: ObjectPath, objects: Sequence[ObjectPath], month: str) -> list[ObjectPath]:
    """The `date=<month>-DD/part.parquet` objects directly under a symbol's folder (a staged temp is never one)."""
    prefix = f"date={month}-" if month else "date="
    return [o for o in objects if o.name == PART_FILE and o.parent.parent == folder and o.parent.name.startswith(prefix)]


def _compact_object_month(
    root: ObjectPath, dataset: str, timeframe: str, symbol: str, month: str, remove: Callable[[dict[ObjectPath, str]], int]
) -> MonthCompaction:
    month_file = partition_path(root, dataset, timeframe, symbol, month)
    folder = month_file.parent.parent
    objects = folder.files()  # one listing: the day objects and the month object
    day_files = _day_objects(folder, objects, month)
    if not day_files:
        return MonthCompaction(symbol, month, 0, 0, 0)
    data = {path: path.read_bytes() for path in day_files}
    days = {path: date.fromisoformat(path.parent.name[5:]) for path in day_files}
    frames = {path: pl.read_parquet(io.BytesIO(raw)) for path, raw in data.items()}
    month_frame = pl.read_parquet(io.BytesIO(month_file.read_bytes())) if month_file in objects else None
    folded, merged = _merge(frames, days, month_frame)
    if merged is None:
        month_file.unlink(missing_ok=True)
    else:
        write_frame_atomic(merged, month_file)
    remove({path: _digest(data[path]) for path in folded})
    return MonthCompaction(symbol, month, len(folded), len(day_files) - len(folded), merged.height if merged is not None else 0)


def months_to_compact(root: LakeRoot, dataset: str, timeframe: str, before: date, symbols: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(symbol, month) with day files in a month that ended before `before` (months still filling
    are left as days: their partitions are still being written)."""
    current = f"{before.year:04d}-{before.month:02d}"
    if isinstance(root, ObjectPath):
        return _object_months_to_compact(root / dataset / f"timeframe={timeframe}", current, symbols)
    base = Path(root) / dataset / f"timeframe={timeframe}"
    if not base.is_dir():
        return []
    found: set[tuple[str, str]] = set()
    for folder in base.glob("symbol=*"):
        symbol = folder.name[7:]
        if symbols is not None and symbol not in symbols:
            continue
        for entry in os.scandir(folder):
            month = entry.name[5:12]
            if entry.name.startswith("date=") and month < current:
                found.add((symbol, month))
    return sorted(found)


def _object_months_to_compact(base: ObjectPath, current: str, symbols: Sequence[str] | None) -> list[tuple[str, str]]:
    """`months_to_compact` on an object store: one listing of the timeframe's objects."""
    found: set[tuple[str, str]] = set()
    for obj in base.files():
        folder = obj.parent.parent
        if folder.parent != base or not folder.name.startswith("symbol="):
            continue
        symbol = folder.name[7:]
        if (symbols is None or symbol in symbols) and _day_objects(folder, [obj], "") and (month := obj.parent.name[5:12]) < current:
            found.add((symbol, month))
    return sorted(found)


def compact(
    root: LakeRoot, dataset: str, timeframe: str, before: date, symbols: Sequence[str] | None = None
) -> list[MonthCompaction]:
    """Compacts every closed month (ended before `before`) that has day files."""
    return [compact_month(root, dataset, timeframe, s, m) for s, m in months_to_compact(root, dataset, timeframe, before, symbols)]
