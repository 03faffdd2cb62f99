"""Bulk backfill outside Dagster runs: fetch -> validate -> write, the three stages overlapped.

Dagster materializes one partition per run, which is right for schedules, retries and the UI, but a
first backfill of years x hundreds of symbols is thousands of runs. This writes the same datasets
(clean bars and quarantine, each partition replaced atomically, re-runs idempotent) chunk by chunk,
fetching the next chunk and writing the previous one while the current one is validated, so both
cores stay busy. A chunk whose blocking checks fail still writes: its bad rows go to quarantine,
exactly as the Dagster ingest does, and the summary counts them. As there, the first bar's return
is measured from the last bar stored before the range (a first day 100x off is caught).

`root` is the lake's root as the store takes it: a local folder or an object store's prefix
(`lake.filesystem.ObjectPath`), the same partitions either way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from lake.corporate_actions import load_corporate_actions
from lake.errors import LakeError, UnknownSymbolError
from lake.filesystem import ObjectPath
from lake.sources.base import BarSource
from lake.store import QUARANTINE, read_bars, replace_partition, replace_partitions
from lake.validation import MAX_JUMP, validate_bars

# How far back the stored bar before the range may lie: past a long holiday weekend (intraday), a year (1d).
_LOOKBACK = {"1d": timedelta(days=400)}
_DEFAULT_LOOKBACK = timedelta(days=10)


@dataclass
class BulkSummary:
    rows: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    partitions: int = 0
    failed_checks: Counter[str] = field(default_factory=Counter)  # rule -> failing rows
    # The failing rows of blocking rules only: a warning that sets rows aside (Alpaca's
    # extended-hours bars) is expected every day and must not fail the command.
    blocking_failures: Counter[str] = field(default_factory=Counter)
    written: set[tuple[str, str]] = field(default_factory=set)  # (symbol, period) of the bars written

    def add(self, other: BulkSummary) -> None:
        self.rows += other.rows
        self.clean_rows += other.clean_rows
        self.quarantined_rows += other.quarantined_rows
        self.partitions += other.partitions
        self.failed_checks.update(other.failed_checks)
        self.blocking_failures.update(other.blocking_failures)
        self.written |= other.written


def bulk_ingest(
    source: BarSource,
    symbols: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    root: Path | ObjectPath,
    *,
    period: str = "date",
    chunk_symbols: int = 10,
    engine: str = "polars",
    exchange: str = "XNYS",
    on_chunk: Callable[[BulkSummary], None] | None = None,
    max_jump: float = MAX_JUMP,
) -> BulkSummary:
    """Ingests `symbols` over [start, end) into the lake at `root`, `chunk_symbols` at a time.

    `period` is the partition layout: "date" (one file per symbol and exchange day, what the Dagster
    assets use) or "year". Every (symbol, period) the source returned rows for is replaced whole, so
    ranges should cover whole periods. `on_chunk` gets each chunk's summary (for a progress bar).
    `max_jump` is the close ratio that blocks (QUANTLAKE_MAX_JUMP); a source with `extended_hours`
    (Alpaca) has its pre/after-hours bars quarantined as such.
    """
    if chunk_symbols < 1:
        raise LakeError(f"bulk ingest: chunk_symbols must be >= 1, got {chunk_symbols}")
    if period not in ("date", "year"):
        raise LakeError(f"bulk ingest: period must be 'date' or 'year', got {period!r}")
    chunks = [list(symbols[i : i + chunk_symbols]) for i in range(0, len(symbols), chunk_symbols)]
    total = BulkSummary()
    actions = load_corporate_actions(root)  # the same declared splits the Dagster ingest honours

    def fetch(chunk: list[str]) -> pl.DataFrame:
        return source.fetch(chunk, timeframe, start, end)

    def write(clean: pl.DataFrame, quarantine: pl.DataFrame) -> tuple[int, set[tuple[str, str]]]:
        # Validation puts every row in exactly one of the two, so together they name every
        # partition touched; one that lost all its clean (or all its bad) rows must not keep old ones.
        written = {
            dataset: {_key_of(path) for path in replace_partitions(root, dataset, timeframe, rows, period=period)}
            for dataset, rows in (("bars", clean), (QUARANTINE, quarantine))
        }
        keys = written["bars"] | written[QUARANTINE]
        emptied = {"bars": clean.clear(), QUARANTINE: quarantine.clear()}
        for dataset, have in written.items():
            for symbol, when in keys - have:
                # Through the store, not an unlink: a compacted month's rows for that day must not show again.
                replace_partition(root, dataset, timeframe, symbol, when, emptied[dataset])
        return len(keys), written["bars"]

    with ThreadPoolExecutor(1, thread_name_prefix="bulk-fetch") as fetcher, ThreadPoolExecutor(
        1, thread_name_prefix="bulk-write"
    ) as writer:
        next_fetch: Future[pl.DataFrame] | None = fetcher.submit(fetch, chunks[0]) if chunks else None
        pending: tuple[Future[tuple[int, set[tuple[str, str]]]], BulkSummary] | None = None
        for i in range(len(chunks)):
            assert next_fetch is not None
            raw = next_fetch.result()
            next_fetch = fetcher.submit(fetch, chunks[i + 1]) if i + 1 < len(chunks) else None
            # [start, end) is what was asked for: every session in it is expected, nothing after it.
            report = validate_bars(
                raw, timeframe=timeframe, exchange=exchange, engine=engine, expected_from=start, expected_until=end, corporate_actions=actions,
                previous=_previous_bars(root, timeframe, chunks[i], start), max_jump=max_jump,
                extended_hours=bool(getattr(source, "extended_hours", False)),
            )
            _check_placeable(report.quarantine, chunks[i])
            if pending is not None:
                _finish(pending, total, on_chunk)
            part = BulkSummary(raw.height, report.clean.height, report.quarantine.height)
            part.failed_checks.update({o.name: o.failed_rows for o in report.results if not o.passed})
            part.blocking_failures.update({o.name: o.failed_rows for o in report.results if not o.passed and o.blocking})
            pending = (writer.submit(write, report.clean, report.quarantine), part)
        if pending is not None:
            _finish(pending, total, on_chunk)
    return total


def _finish(pending: tuple[Future[tuple[int, set[tuple[str, str]]]], BulkSummary], total: BulkSummary, on_chunk: Callable[[BulkSummary], None] | None) -> None:
    written, part = pending
    part.partitions, part.written = written.result()  # re-raises a failed write here, before the next chunk starts
    total.add(part)
    if on_chunk is not None:
        on_chunk(part)


def _previous_bars(root: Path | ObjectPath, timeframe: str, symbols: Sequence[str], before: datetime) -> pl.DataFrame | None:
    """The last stored clean bar of each of `symbols` before `before` (context for the jump rules), or
    None if none has one: the same context the Dagster ingest gives a partition."""
    found = []
    for symbol in symbols:
        try:
            stored = read_bars(root, [symbol], timeframe, before - _LOOKBACK.get(timeframe, _DEFAULT_LOOKBACK), before)
        except UnknownSymbolError:
            continue
        if stored.height:
            found.append(stored.tail(1))
    return pl.concat(found) if found else None


def _key_of(path: Path | ObjectPath) -> tuple[str, str]:
    """(symbol, period) back from <dataset>/timeframe=../symbol=SYM/(date|year)=P/part.parquet."""
    return path.parent.parent.name.partition("=")[2], path.parent.name.partition("=")[2]


def _check_placeable(quarantine: pl.DataFrame, chunk: list[str]) -> None:
    """Rows without a symbol or timestamp belong to no partition: refuse rather than drop them."""
    unplaced = quarantine.filter(pl.col("symbol").is_null() | pl.col("ts").is_null()).height
    if unplaced:
        raise LakeError(
            f"bulk ingest of {chunk}: {unplaced} row(s) have no symbol or timestamp and fit no partition; "
            "fix the source rows (the file source can quarantine them with their line numbers)"
        )
