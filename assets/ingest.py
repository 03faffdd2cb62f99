"""One ingest step shared by the bar assets: validate, write clean rows and quarantine, report."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from assets.metadata import bars_metadata, markdown_table
from assets.range_runs import add_partition_metadata
from lake.corporate_actions import load_corporate_actions
from lake.errors import LakeError, UnknownSymbolError
from lake.filesystem import ObjectPath
from lake.store import QUARANTINE, read_bars, replace_partition, replace_partition_frames
from lake.validation import RULES, ValidationReport, validate_bars

# How far back the bar before a partition may lie: past a long holiday weekend (1m), a year (1d).
_LOOKBACK = {"1d": timedelta(days=400)}
_DEFAULT_LOOKBACK = timedelta(days=10)


def previous_bar(root: Path | ObjectPath, timeframe: str, symbol: str, before: datetime | None) -> pl.DataFrame | None:
    """The last stored clean bar of `symbol` before `before` (context for the jump rules), if any."""
    if before is None:
        return None
    try:
        stored = read_bars(root, [symbol], timeframe, before - _LOOKBACK.get(timeframe, _DEFAULT_LOOKBACK), before)
    except UnknownSymbolError:
        return None
    return stored.tail(1) if stored.height else None


def previous_bars(root: Path | ObjectPath, timeframe: str, symbols: Sequence[str], before: datetime | None) -> pl.DataFrame | None:
    """`previous_bar` of each of `symbols` (those the lake has), in one frame; None if none has one."""
    found = [bar for symbol in symbols if (bar := previous_bar(root, timeframe, symbol, before)) is not None]
    return pl.concat(found) if found else None


def check_specs(asset_name: str) -> list[dg.AssetCheckSpec]:
    """One asset check per validation rule; blocking ones stop downstream assets."""
    return [
        dg.AssetCheckSpec(name=rule.name, asset=asset_name, blocking=rule.blocking, description=rule.description)
        for rule in RULES
    ]


def check_results(report: ValidationReport) -> Iterator[dg.AssetCheckResult]:
    for outcome in report.results:
        yield dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
            metadata={
                "failed_rows": outcome.failed_rows,
                "examples": dg.MetadataValue.md(markdown_table(pl.DataFrame(outcome.examples)) if outcome.examples else "_none_"),
            },
        )


def ingest_partition(
    context: dg.AssetExecutionContext,
    root: Path | ObjectPath,
    bars: pl.DataFrame,
    *,
    timeframe: str,
    symbol: str,
    period: str,
    exchange: str,
    expected_from: datetime | None = None,
    expected_until: datetime | None = None,
    validation: Mapping[str, Any] | None = None,  # MarketDataResource.validation_options: max_jump, extended_hours
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Validates one partition's bars and replaces the partition (and its quarantine) atomically.

    [expected_from, expected_until) is the range the source was asked for: the missing-bars check
    expects every bar the calendar has in it. A price jump from the last stored bar before it counts
    (a whole partition 100x off is caught); splits declared in the lake explain jumps."""
    report = validate_bars(
        bars, timeframe=timeframe, exchange=exchange, expected_from=expected_from, expected_until=expected_until,
        corporate_actions=load_corporate_actions(root), previous=previous_bar(root, timeframe, symbol, expected_from),
        **(validation or {}),
    )
    paths = replace_partition(root, "bars", timeframe, symbol, period, report.clean)
    replace_partition(root, QUARANTINE, timeframe, symbol, period, report.quarantine)
    failed = [o.name for o in report.results if not o.passed]
    context.log.info(
        f"{symbol} {timeframe} {period}: {report.clean.height} rows written, "
        f"{report.quarantine.height} quarantined, failed checks: {failed or 'none'}"
    )
    meta = bars_metadata(report.clean, str(paths[0]) if paths else None)
    meta["quarantined_rows"] = report.quarantine.height
    yield dg.MaterializeResult(metadata=meta)
    yield from check_results(report)


@dataclass(frozen=True)
class Partition:
    """One Dagster partition of a bar asset: its key, symbol, period (day or year) and the start of
    its window (windows tile time: a row belongs to the last window starting at or before it)."""

    key: str
    symbol: str
    period: str
    start: datetime


def _placed(df: pl.DataFrame, partitions: Sequence[Partition]) -> pl.DataFrame:
    """`df` with `_symbol` and `_period`: the partition each row falls in. A run of one symbol (or one
    period) places every row there, as a one-partition run always did; otherwise a row with no
    symbol or time, or a symbol the run does not ingest, fits no partition and is refused."""
    symbols = sorted({p.symbol for p in partitions})
    windows = sorted({(p.start, p.period) for p in partitions})
    starts = np.array([int(s.timestamp() * 1_000_000) for s, _ in windows], dtype=np.int64)
    periods = [w for _, w in windows]
    if len(periods) == 1:
        period: pl.Expr = pl.lit(periods[0])
    else:
        micros = df["ts"].dt.epoch("us").fill_null(0).to_numpy()
        index = np.clip(np.searchsorted(starts, micros, side="right") - 1, 0, None)
        found = pl.Series("_period", np.array(periods)[index], dtype=pl.String)
        period = pl.when(pl.col("ts").is_null()).then(None).otherwise(pl.lit(found))
    placed = df.with_columns(
        (pl.lit(symbols[0]) if len(symbols) == 1 else pl.col("symbol")).alias("_symbol"), period.alias("_period")
    )
    unplaced = placed.filter(pl.col("_symbol").is_null() | pl.col("_period").is_null() | ~pl.col("_symbol").is_in(symbols))
    if unplaced.height:
        raise LakeError(
            f"{unplaced.height} row(s) fit no partition of this run (symbol {unplaced['symbol'][0]!r}, ts {unplaced['ts'][0]}): "
            f"rows need a timestamp and one of the run's symbols {symbols}; ingest them one partition at a time"
        )
    return placed


def _by_partition(df: pl.DataFrame, partitions: Sequence[Partition]) -> dict[tuple[str, str], pl.DataFrame]:
    """Every partition of the run -> its rows (an empty frame when it has none), in (symbol, ts) order."""
    empty = df.clear()
    out: dict[tuple[str, str], pl.DataFrame] = {(p.symbol, p.period): empty for p in partitions}
    if df.height:
        groups = _placed(df, partitions).partition_by("_symbol", "_period", as_dict=True, maintain_order=True)
        for (symbol, period), rows in groups.items():
            out[(str(symbol), str(period))] = rows.drop("_symbol", "_period")
    return out


def ingest_partitions(
    context: dg.AssetExecutionContext,
    root: Path | ObjectPath,
    bars: pl.DataFrame,
    *,
    timeframe: str,
    partitions: Sequence[Partition],
    exchange: str,
    expected_from: datetime,
    expected_until: datetime,
    nothing: type[LakeError] = LakeError,
    validation: Mapping[str, Any] | None = None,  # as ingest_partition
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """A run over several partitions (a backfill range, `BackfillPolicy.single_run`): the fetched
    bars are validated at once, split by partition and each partition (and its quarantine) replaced
    atomically, the same files a run per partition writes. A bar's return is measured from the
    previous bar fetched (at a partition's first bar, the previous partition's last one), so the
    checks count rows over the whole run; each partition gets its own materialization metadata.
    A partition the source returned nothing for fails the run with `nothing`, before any write."""
    symbols = sorted({p.symbol for p in partitions})
    report = validate_bars(
        bars, timeframe=timeframe, exchange=exchange, expected_from=expected_from, expected_until=expected_until,
        corporate_actions=load_corporate_actions(root), previous=previous_bars(root, timeframe, symbols, expected_from),
        engine="polars",  # the same masks and outcomes as great-expectations, without its per-call overhead
        **(validation or {}),
    )
    clean, quarantine = _by_partition(report.clean, partitions), _by_partition(report.quarantine, partitions)
    empty = [f"{symbol} {period}" for (symbol, period), rows in clean.items() if rows.is_empty() and quarantine[(symbol, period)].is_empty()]
    if empty:  # as a one-partition run with nothing to ingest, before anything is written
        raise nothing(f"no {timeframe} bars for {len(empty)} partition(s) of the run: {', '.join(empty[:5])}")
    replace_partition_frames(root, "bars", timeframe, clean)
    replace_partition_frames(root, QUARANTINE, timeframe, quarantine)
    failed = [o.name for o in report.results if not o.passed]
    context.log.info(
        f"{timeframe} {len(partitions)} partitions ({len(symbols)} symbols): {report.clean.height} rows written, "
        f"{report.quarantine.height} quarantined, failed checks: {failed or 'none'}"
    )
    for p in partitions:
        rows = clean[(p.symbol, p.period)]
        meta: dict[str, object] = {"dagster/row_count": rows.height, "quarantined_rows": quarantine[(p.symbol, p.period)].height}
        if rows.height:
            meta["first_ts"], meta["last_ts"] = str(rows["ts"][0]), str(rows["ts"][-1])
        add_partition_metadata(context, p.key, meta)
    yield dg.MaterializeResult()
    yield from check_results(report)
