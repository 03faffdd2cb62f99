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
Local lakes only: an object store has no stamp to compare before removing a day file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.store import PART_FILE, LakeRoot, exchange_date, partition_path, write_frame_atomic

Stamp = tuple[int, int, int]  # inode, size, mtime in ns: a day file replaced (renamed over) changes it


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


def compact_month(
    root: LakeRoot, dataset: str, timeframe: str, symbol: str, month: str, *, remove: Callable[[dict[Path, Stamp]], int] = _remove_folded
) -> MonthCompaction:
    """Folds `symbol`'s day files of `month` (YYYY-MM) into its month file, atomically."""
    if isinstance(root, ObjectPath):
        raise LakeError(f"compaction of {symbol} {month}: the lake at {root} is on an object store; compaction runs on local lakes")
    month_file = partition_path(root, dataset, timeframe, symbol, month)
    day_files = sorted(month_file.parent.parent.glob(f"date={month}-*/{PART_FILE}"))
    if not day_files:
        return MonthCompaction(symbol, month, 0, 0, 0)
    stamps = {path: _stamp(path) for path in day_files}
    days = {path: date.fromisoformat(path.parent.name[5:]) for path in day_files}
    frames = {path: pl.read_parquet(path) for path in day_files}
    folded = {path: frame for path, frame in frames.items() if _on_its_day(frame, days[path])}
    parts = [frame for frame in folded.values() if frame.height]
    if month_file.exists():  # its rows of days with a day file are replaced by that file
        parts.insert(0, pl.read_parquet(month_file).filter(~exchange_date().is_in(list(days.values()))))
    merged = pl.concat(parts, how="diagonal_relaxed").sort("ts") if parts else None
    if merged is None or merged.is_empty():
        month_file.unlink(missing_ok=True)
        rows = 0
    else:
        write_frame_atomic(merged, month_file)
        rows = merged.height
    remove({path: stamps[path] for path in folded})
    return MonthCompaction(symbol, month, len(folded), len(day_files) - len(folded), rows)


def months_to_compact(root: LakeRoot, dataset: str, timeframe: str, before: date, symbols: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(symbol, month) with day files in a month that ended before `before` (months still filling
    are left as days: their partitions are still being written)."""
    if isinstance(root, ObjectPath):
        return []
    base = Path(root) / dataset / f"timeframe={timeframe}"
    if not base.is_dir():
        return []
    current = f"{before.year:04d}-{before.month:02d}"
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


def compact(
    root: LakeRoot, dataset: str, timeframe: str, before: date, symbols: Sequence[str] | None = None
) -> list[MonthCompaction]:
    """Compacts every closed month (ended before `before`) that has day files."""
    return [compact_month(root, dataset, timeframe, s, m) for s, m in months_to_compact(root, dataset, timeframe, before, symbols)]
