"""Reading the bar quarantine by the rows' own timestamps.

A quarantined row is stored in the partition its ingest run placed it in, which need not be its
date's: a weekend or holiday bar sits in the session before it (partition windows tile time), a
one-partition run keeps every row it read, however far off its timestamp. So the quarantine is
not pruned by folder name like the bars: every file of the symbols is scanned and the range is a
filter on `ts`, pushed into the Parquet scan (the quarantine is small, its row groups carry ts
statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import polars as pl

from lake.errors import UnknownSymbolError
from lake.filesystem import ObjectPath
from lake.store import QUARANTINE, LakeRoot, as_utc, partition_files, scan_files


def read_quarantine(
    root: LakeRoot, timeframe: str, symbols: Sequence[str], start: date | datetime | None = None, end: date | datetime | None = None
) -> pl.DataFrame:
    """Quarantined rows of `symbols` whose own `ts` lies in [start, end) (a date is 00:00 UTC), with
    their `check` and `reason`, sorted by (symbol, ts). A symbol with nothing quarantined adds no
    rows; rows without a timestamp only come back when no bound is given."""
    files: list[Path | ObjectPath] = []
    for symbol in symbols:
        try:
            files += partition_files(root, QUARANTINE, timeframe, [symbol])  # no bounds: no folder pruning
        except UnknownSymbolError:
            continue
    if not files:
        return pl.DataFrame()
    scan = scan_files(files)
    if start is not None:
        scan = scan.filter(pl.col("ts") >= as_utc(start))
    if end is not None:
        scan = scan.filter(pl.col("ts") < as_utc(end))
    return scan.collect().sort("symbol", "ts", nulls_last=True)
