"""The Parquet lake: hive-partitioned files, atomic partition writes, pruned reads.

Layout: <root>/<dataset>/timeframe=<tf>/symbol=<SYM>/<date=YYYY-MM-DD | year=YYYY>/part.parquet
(one file per partition, zstd), and `month=YYYY-MM/part.parquet` where lake/compaction.py folded a
symbol-month's day files into one. A day file wins over its month file for that day (a re-ingest
after compaction, a tombstone, a compaction killed before it removed the day files), so a reader sees
every bar once in any mix of the two. Files keep every column, so each one is self-describing; the
folder names are only there to prune reads. A write goes to a temporary file in the same folder and
is renamed over the old one, so a crash mid-write leaves the previous partition intact.

The root is a local `Path` (or a string path) or an `ObjectPath` on an S3-compatible store
(lake/filesystem.py): the same layout, each object written whole and copied into place.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import overload

import polars as pl

from lake.errors import LakeError, UnknownSymbolError
from lake.filesystem import ObjectPath, object_uris
from lake.schema import BAR_SCHEMA, check_timeframe, conform_bars

PART_FILE = "part.parquet"
QUARANTINE = "quarantine"  # the dataset failing rows go to, with their check and reason
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEAR_RE = re.compile(r"^\d{4}$")
_MONTH_RE = re.compile(r"^\d{4}-\d{2}$")

TimeBound = date | datetime | None
LakeRoot = Path | str | ObjectPath  # a string is a local path; an object store is an ObjectPath


def period_dir(period: str) -> str:
    """`date=YYYY-MM-DD` for a day's partition, `year=YYYY` for a year's, `month=YYYY-MM` for a
    compacted month of day partitions."""
    if _DATE_RE.match(period):
        return f"date={period}"
    if _YEAR_RE.match(period):
        return f"year={period}"
    if _MONTH_RE.match(period):
        return f"month={period}"
    raise LakeError(f"partition period {period!r} is neither a date (YYYY-MM-DD), a month (YYYY-MM) nor a year (YYYY)")


@overload
def partition_path(root: Path | str, dataset: str, timeframe: str, symbol: str, period: str) -> Path: ...
@overload
def partition_path(root: ObjectPath, dataset: str, timeframe: str, symbol: str, period: str) -> ObjectPath: ...
def partition_path(root: LakeRoot, dataset: str, timeframe: str, symbol: str, period: str) -> Path | ObjectPath:
    check_timeframe(timeframe)
    return _base(root) / dataset / f"timeframe={timeframe}" / f"symbol={symbol}" / period_dir(period) / PART_FILE


def _base(root: LakeRoot) -> Path | ObjectPath:
    return root if isinstance(root, ObjectPath) else Path(root)


# A temp file this old is an orphan of a killed write (a Parquet write takes seconds), not another
# writer's work in progress: the next write of the same file removes it.
ORPHAN_AGE_S = 600.0


def sweep_orphans(path: Path, older_than_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Removes temp files of `path` left by writes that were killed before their rename."""
    swept: list[Path] = []
    if not path.parent.is_dir():
        return swept
    cutoff = datetime.now(UTC).timestamp() - older_than_s  # file ages only: nothing written depends on it
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if orphan.stat().st_mtime < cutoff:
                orphan.unlink()
                swept.append(orphan)
        except FileNotFoundError:
            continue  # its writer finished (renamed it) or another sweep took it
    return swept


@overload
def write_frame_atomic(df: pl.DataFrame, path: Path) -> Path: ...
@overload
def write_frame_atomic(df: pl.DataFrame, path: ObjectPath) -> ObjectPath: ...
def write_frame_atomic(df: pl.DataFrame, path: Path | ObjectPath) -> Path | ObjectPath:
    """Writes `df` to `path` via a temp file + rename: readers see the old file or the new one.
    Temp files a killed write left beside `path` are swept first. On an object store the file is
    built in memory (a failure there sends nothing), then staged and copied into place."""
    if isinstance(path, ObjectPath):
        path.sweep_orphans(ORPHAN_AGE_S)
        buffer = io.BytesIO()
        df.write_parquet(buffer, compression="zstd", statistics=True)
        path.write_bytes_atomic(buffer.getvalue())
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_orphans(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        df.write_parquet(tmp, compression="zstd", statistics=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@overload
def write_text_atomic(path: Path, text: str) -> Path: ...
@overload
def write_text_atomic(path: ObjectPath, text: str) -> ObjectPath: ...
def write_text_atomic(path: Path | ObjectPath, text: str) -> Path | ObjectPath:
    """A text file (a report) written the same way: the old version or the new one, never half."""
    return write_bytes_atomic(path, text.encode())


@overload
def write_bytes_atomic(path: Path, data: bytes) -> Path: ...
@overload
def write_bytes_atomic(path: ObjectPath, data: bytes) -> ObjectPath: ...
def write_bytes_atomic(path: Path | ObjectPath, data: bytes) -> Path | ObjectPath:
    """Any file (a report's image) written the same way: the old version or the new one, never half."""
    if isinstance(path, ObjectPath):
        path.write_bytes_atomic(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@overload
def replace_partition(root: Path | str, dataset: str, timeframe: str, symbol: str, period: str, df: pl.DataFrame) -> list[Path]: ...
@overload
def replace_partition(root: ObjectPath, dataset: str, timeframe: str, symbol: str, period: str, df: pl.DataFrame) -> list[ObjectPath]: ...
def replace_partition(root: LakeRoot, dataset: str, timeframe: str, symbol: str, period: str, df: pl.DataFrame) -> Sequence[Path | ObjectPath]:
    """Makes the partition hold exactly `df` (sorted by ts); an empty frame removes the partition.
    A day whose month was compacted gets an empty day file instead (a tombstone: it hides the
    month file's rows of that day), so the day holds nothing either way."""
    path = partition_path(root, dataset, timeframe, symbol, period)
    if df.is_empty() and not (_DATE_RE.match(period) and _compacted(root, dataset, timeframe, symbol, period[:7])):
        path.unlink(missing_ok=True)
        return []
    return [write_frame_atomic(df.sort("ts"), path)]


def _compacted(root: LakeRoot, dataset: str, timeframe: str, symbol: str, month: str) -> bool:
    """Whether the month has a month file (asked only when a day is written empty: on an object
    store one request then, none for the days written with rows)."""
    return partition_path(root, dataset, timeframe, symbol, month).exists()


def replace_partition_frames(
    root: LakeRoot, dataset: str, timeframe: str, frames: Mapping[tuple[str, str], pl.DataFrame], *, workers: int = 2
) -> dict[tuple[str, str], Sequence[Path | ObjectPath]]:
    """Replaces each (symbol, period) partition named in `frames` with its rows, in parallel threads
    (Parquet writes release the GIL); an empty frame removes its partition, as `replace_partition`."""
    from concurrent.futures import ThreadPoolExecutor

    def write(item: tuple[tuple[str, str], pl.DataFrame]) -> Sequence[Path | ObjectPath]:
        (symbol, period), frame = item
        return replace_partition(root, dataset, timeframe, symbol, period, frame)

    items = list(frames.items())
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return dict(zip([key for key, _ in items], pool.map(write, items), strict=True))


def as_utc(bound: date | datetime) -> datetime:
    """A read bound as an aware UTC instant: a date is its midnight UTC; a naive datetime is refused."""
    if isinstance(bound, datetime):
        if bound.tzinfo is None:
            raise LakeError(f"time bound {bound} is timezone-naive; pass an aware datetime or a date")
        return bound.astimezone(UTC)
    return datetime.combine(bound, time(), tzinfo=UTC)


def _period_overlaps(name: str, lo: datetime | None, hi: datetime | None) -> bool:
    """Whether a `date=`/`year=` folder can hold rows in [lo, hi). A day's bars lie within ±1 UTC day."""
    key, _, value = name.partition("=")
    if key == "date":
        first = datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC) - timedelta(days=1)
        last = first + timedelta(days=3)
    elif key == "year":
        first = datetime(int(value), 1, 1, tzinfo=UTC) - timedelta(days=1)
        last = datetime(int(value) + 1, 1, 1, tzinfo=UTC) + timedelta(days=1)
    elif key == "month":
        year, month = int(value[:4]), int(value[5:7])
        first = datetime(year, month, 1, tzinfo=UTC) - timedelta(days=1)
        last = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC) + timedelta(days=1)
    else:
        return False
    return (lo is None or last > lo) and (hi is None or first < hi)


@overload
def partition_files(
    root: Path | str, dataset: str, timeframe: str, symbols: Sequence[str], start: TimeBound = None, end: TimeBound = None
) -> list[Path]: ...
@overload
def partition_files(
    root: ObjectPath, dataset: str, timeframe: str, symbols: Sequence[str], start: TimeBound = None, end: TimeBound = None
) -> list[ObjectPath]: ...
def partition_files(
    root: LakeRoot, dataset: str, timeframe: str, symbols: Sequence[str], start: TimeBound = None, end: TimeBound = None
) -> Sequence[Path | ObjectPath]:
    """The files that may hold rows of `symbols` in [start, end): pruned by folder name, not read."""
    check_timeframe(timeframe)
    lo = as_utc(start) if start is not None else None
    hi = as_utc(end) if end is not None else None
    if isinstance(root, ObjectPath):
        return _object_partition_files(root / dataset / f"timeframe={timeframe}", dataset, timeframe, symbols, lo, hi)
    base = Path(root) / dataset / f"timeframe={timeframe}"
    files: list[Path] = []
    for symbol in symbols:
        folder = base / f"symbol={symbol}"
        if not folder.is_dir():
            raise UnknownSymbolError(f"no {timeframe} {dataset} for {symbol!r} in the lake at {root}")
        for period in sorted(folder.iterdir()):
            part = period / PART_FILE
            if _period_overlaps(period.name, lo, hi) and part.is_file():
                files.append(part)
    return files


def _object_partition_files(
    base: ObjectPath, dataset: str, timeframe: str, symbols: Sequence[str], lo: datetime | None, hi: datetime | None
) -> list[ObjectPath]:
    """partition_files on an object store: one listing per symbol; only `<period>/part.parquet`
    objects count (a staged `.part.parquet.*.tmp` is never data). No object: the symbol is unknown."""
    files: list[ObjectPath] = []
    for symbol in symbols:
        folder = base / f"symbol={symbol}"
        found = folder.files()
        if not found and not folder.is_dir():
            raise UnknownSymbolError(f"no {timeframe} {dataset} for {symbol!r} in the lake at {base.parent.parent}")
        for part in found:
            if part.name == PART_FILE and part.parent.parent == folder and _period_overlaps(part.parent.name, lo, hi):
                files.append(part)
    return files


def scan_files(files: Sequence[Path | ObjectPath]) -> pl.LazyFrame:
    """One lazy Parquet scan of the files (all local or all on one object store), no hive columns."""
    objects = [f for f in files if isinstance(f, ObjectPath)]
    if not objects:
        return pl.scan_parquet([f for f in files if isinstance(f, Path)], hive_partitioning=False)
    if len(objects) != len(files) or len({o.store for o in objects}) > 1:
        raise LakeError("one scan cannot mix local files and objects, or two object stores")
    return pl.scan_parquet(object_uris(objects), hive_partitioning=False, storage_options=objects[0].store.storage_options())


def shadowed_days(files: Sequence[Path | ObjectPath]) -> dict[Path | ObjectPath, list[date]]:
    """Month file -> the days of it that also have a day file among `files` (the day file wins)."""
    months = {(f.parent.parent, f.parent.name[6:]): f for f in files if f.parent.name.startswith("month=")}
    out: dict[Path | ObjectPath, list[date]] = {}
    for f in files:
        name = f.parent.name
        month = months.get((f.parent.parent, name[5:12])) if name.startswith("date=") else None
        if month is not None:
            out.setdefault(month, []).append(date.fromisoformat(name[5:]))
    return out


def exchange_date() -> pl.Expr:
    """A row's exchange-local date: the day partition a clean bar belongs to (month files hold only
    rows whose exchange date is their day partition's, so this finds a day's rows in its month)."""
    from lake.calendar import EXCHANGE_TZ

    return pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ).dt.date()


def scan_layout(files: Sequence[Path | ObjectPath]) -> pl.LazyFrame:
    """`scan_files`, with each month file's rows of days that have their own day file left out."""
    shadowed = shadowed_days(files)
    if not shadowed:
        return scan_files(files)
    plain = [f for f in files if f not in shadowed]
    scans = [scan_files([month]).filter(~exchange_date().is_in(days)) for month, days in shadowed.items()]
    return pl.concat([*([scan_files(plain)] if plain else []), *scans], how="diagonal_relaxed")


def scan_dataset(
    root: LakeRoot, dataset: str, timeframe: str, symbols: Sequence[str], start: TimeBound = None, end: TimeBound = None
) -> pl.LazyFrame | None:
    """A lazy scan of the pruned files filtered to [start, end); None when no file matches."""
    files = partition_files(root, dataset, timeframe, symbols, start, end)
    if not files:
        return None
    scan = scan_layout(files)
    if start is not None:
        scan = scan.filter(pl.col("ts") >= as_utc(start))
    if end is not None:
        scan = scan.filter(pl.col("ts") < as_utc(end))
    return scan


def read_bars(
    root: LakeRoot,
    symbols: Sequence[str],
    timeframe: str,
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    dataset: str = "bars",
) -> pl.DataFrame:
    """Bars of `symbols` with start <= ts < end, in the bar schema, sorted by symbol and ts.

    Only the partitions that can overlap the range are opened, and the ts filter is pushed into the
    Parquet scan (row-group statistics), so a backtest never reads the whole lake. A symbol with no
    data in the lake raises UnknownSymbolError naming it.
    """
    scan = scan_dataset(root, dataset, timeframe, symbols, start, end)
    if scan is None:
        return pl.DataFrame(schema=BAR_SCHEMA)
    return in_symbol_ts_order(conform_bars(scan.collect(), where=f"lake {dataset}/{timeframe}"))


def read_frame(
    root: LakeRoot, dataset: str, timeframe: str, symbols: Sequence[str], start: TimeBound = None, end: TimeBound = None
) -> pl.DataFrame:
    """Any dataset's rows (features, quarantine...) for `symbols` in [start, end), sorted."""
    scan = scan_dataset(root, dataset, timeframe, symbols, start, end)
    return pl.DataFrame() if scan is None else in_symbol_ts_order(scan.collect())


def in_symbol_ts_order(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame`'s rows in (symbol, ts) order, each column one contiguous buffer (what a backtest reads
    as views). Pass a frame nothing else needs: in order but in several buffers, it is taken apart.

    The lake's files come back per symbol and period, nearly always already in that order: then each
    column is only joined into one buffer, one column at a time, each read column let go as its copy
    is made. A sort gathers every column while the read ones are still held: twice the bars at its
    peak (1.86 GiB for 9.8 M one-minute bars, 0.66 GiB read). Out of order, or with a null key, it is
    the sort, as before.
    """
    if not _ordered_by_symbol_ts(frame):
        return frame.sort("symbol", "ts")
    if all(column.n_chunks() == 1 for column in frame.iter_columns()):
        return frame
    return pl.DataFrame([frame.drop_in_place(name).rechunk() for name in list(frame.columns)])


@overload
def replace_partitions(
    root: Path | str, dataset: str, timeframe: str, df: pl.DataFrame, *, period: str = "date", workers: int = 2
) -> list[Path]: ...
@overload
def replace_partitions(
    root: ObjectPath, dataset: str, timeframe: str, df: pl.DataFrame, *, period: str = "date", workers: int = 2
) -> list[ObjectPath]: ...
def replace_partitions(
    root: LakeRoot, dataset: str, timeframe: str, df: pl.DataFrame, *, period: str = "date", workers: int = 2
) -> Sequence[Path | ObjectPath]:
    """Splits a multi-symbol frame into partitions (symbol x exchange date, or symbol x year) and
    replaces each atomically, in parallel threads (Parquet writes release the GIL). For backfills."""
    from concurrent.futures import ThreadPoolExecutor

    def write(part: tuple[str, str, pl.DataFrame]) -> Sequence[Path | ObjectPath]:
        symbol, when, frame = part
        return replace_partition(root, dataset, timeframe, symbol, when, frame)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [p for paths in pool.map(write, _split_partitions(df, period)) for p in paths]


def _split_partitions(df: pl.DataFrame, period: str) -> list[tuple[str, str, pl.DataFrame]]:
    """(symbol, period, rows) per partition. Rows already in (symbol, ts) order (what validation
    hands over) are cut into zero-copy slices; anything else is grouped, which copies."""
    if df.is_empty():
        return []
    keys = df.select(pl.col("symbol"), _period_key(period).alias("_period"))
    sym = pl.col("symbol")
    if not _ordered_by_symbol_ts(df):
        parts = df.with_columns(keys["_period"]).partition_by("symbol", "_period", as_dict=True)
        return [(str(s), str(w), frame.drop("_period")) for (s, w), frame in parts.items()]
    first = pl.int_range(pl.len()) == 0
    new = first | sym.ne_missing(sym.shift(1)) | pl.col("_period").ne_missing(pl.col("_period").shift(1))
    starts = keys.select(new).to_series().arg_true().to_list()
    bounds = zip(starts, [*starts[1:], df.height], strict=True)
    # Within a run ts never decreases (checked above): flag it, so the per-partition sort is free.
    sorted_ts = pl.col("ts").set_sorted()
    return [(str(keys["symbol"][a]), str(keys["_period"][a]), df.slice(a, b - a).with_columns(sorted_ts)) for a, b in bounds]


def _period_key(period: str) -> pl.Expr:
    """The partition a bar belongs to: its exchange-local date (YYYY-MM-DD) or year (YYYY)."""
    from lake.calendar import EXCHANGE_TZ

    if period not in ("date", "year"):
        raise LakeError(f"partition period must be 'date' or 'year', got {period!r}")
    local = pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ)
    return local.dt.strftime("%Y-%m-%d") if period == "date" else local.dt.year().cast(pl.String)


def partition_keys(df: pl.DataFrame, period: str) -> set[tuple[str, str]]:
    """The (symbol, period) partitions `df`'s rows fall in (rows missing either are ignored)."""
    keys = df.select(pl.col("symbol"), _period_key(period).alias("_period")).drop_nulls().unique()
    return set(keys.iter_rows())


def _ordered_by_symbol_ts(df: pl.DataFrame) -> bool:
    """Whether the rows are in (symbol, ts) order (a ts may repeat) with no null key: one pass, no sort."""
    symbol, ts = pl.col("symbol"), pl.col("ts")
    back = (symbol < symbol.shift(1)) | ((symbol == symbol.shift(1)) & (ts < ts.shift(1)))
    keys = df.select((symbol.null_count() + ts.null_count()).alias("nulls"), back.any().alias("back"))
    return not (keys.item(0, "nulls") or keys.item(0, "back"))
