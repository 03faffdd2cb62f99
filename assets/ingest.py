"""One ingest step shared by the bar assets: validate, write clean rows and quarantine, report."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import bars_metadata, markdown_table
from lake.corporate_actions import load_corporate_actions
from lake.errors import UnknownSymbolError
from lake.store import QUARANTINE, read_bars, replace_partition
from lake.validation import RULES, ValidationReport, validate_bars

# How far back the bar before a partition may lie: past a long holiday weekend (1m), a year (1d).
_LOOKBACK = {"1d": timedelta(days=400)}
_DEFAULT_LOOKBACK = timedelta(days=10)


def previous_bar(root: Path, timeframe: str, symbol: str, before: datetime | None) -> pl.DataFrame | None:
    """The last stored clean bar of `symbol` before `before` (context for the jump rules), if any."""
    if before is None:
        return None
    try:
        stored = read_bars(root, [symbol], timeframe, before - _LOOKBACK.get(timeframe, _DEFAULT_LOOKBACK), before)
    except UnknownSymbolError:
        return None
    return stored.tail(1) if stored.height else None


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
    root: Path,
    bars: pl.DataFrame,
    *,
    timeframe: str,
    symbol: str,
    period: str,
    exchange: str,
    expected_from: datetime | None = None,
    expected_until: datetime | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Validates one partition's bars and replaces the partition (and its quarantine) atomically.

    [expected_from, expected_until) is the range the source was asked for: the missing-bars check
    expects every bar the calendar has in it. A price jump from the last stored bar before it counts
    (a whole partition 100x off is caught); splits declared in the lake explain jumps."""
    report = validate_bars(
        bars, timeframe=timeframe, exchange=exchange, expected_from=expected_from, expected_until=expected_until,
        corporate_actions=load_corporate_actions(root), previous=previous_bar(root, timeframe, symbol, expected_from),
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
