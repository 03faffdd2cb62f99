"""`quantlake ingest --bulk`: a first backfill through lake.bulk, reported to the Dagster instance.

One Dagster run per partition is right for schedules and retries, but a backfill of years x the
universe is thousands of runs. This writes the same partitions directly, then reports each one as a
runless materialization (with its row count), so the UI's partition bars show them as filled and
sensors downstream see them, exactly as if the runs had happened.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key
from tqdm import tqdm

from assets.partitions import add_symbols, daily_key, intraday_key
from assets.resources import LakeResource, MarketDataResource
from lake.bulk import BulkSummary, bulk_ingest
from lake.calendar import day_window, session_bounds, trading_days, year_window
from orchestration.event_batches import report_materializations
from orchestration.settings import settings


def _ranges(days: list[date], years: list[str], exchange: str, now: datetime) -> list[tuple[str, str, datetime, datetime]]:
    """(timeframe, layout, start, end) for the 1m sessions and the 1d years, closed sessions only.

    The windows are the partitions' own (`day_window`, `year_window`: nights and weekends included),
    so a file's after-hours or weekend row is quarantined, as the Dagster ingest does, not skipped."""
    out: list[tuple[str, str, datetime, datetime]] = []
    if days and session_bounds(days[0], exchange)[0] < now:  # never ask for minutes yet to come
        out.append(("1m", "date", day_window(days[0], exchange)[0], min(day_window(days[-1], exchange)[1], now)))
    if years:
        sessions = trading_days(date(int(years[0]), 1, 1), date(int(years[-1]), 12, 31), exchange)
        closed = [d for d in sessions if session_bounds(d, exchange)[1] <= now]
        if closed:
            last_year_end = year_window(int(years[-1]))[1]
            end = last_year_end if now >= last_year_end else session_bounds(closed[-1], exchange)[1]
            out.append(("1d", "year", year_window(int(years[0]))[0], end))
    return out


def bulk_backfill(
    defs: dg.Definitions, instance: dg.DagsterInstance, days: list[date], years: list[str], symbols: list[str], *, progress: bool = True,
    now: datetime | None = None,
) -> int:
    """Backfills `symbols` over the 1m `days` and 1d `years`; prints a summary; the exit code.
    `now` (default: the wall clock, read here at the edge) bounds what counts as closed."""
    lake: LakeResource = defs.resources["lake"]  # type: ignore[assignment,index]
    market_data: MarketDataResource = defs.resources["market_data"]  # type: ignore[assignment,index]
    status = 0
    ranges = _ranges(days, years, market_data.exchange, now or datetime.now(UTC))
    if not ranges:
        print("nothing to ingest: no session in the range has opened yet")
        return 2
    for timeframe, period, start, end in ranges:
        with tqdm(desc=f"bulk {timeframe}", unit="bar", unit_scale=True, disable=not progress) as bar:
            summary = bulk_ingest(
                market_data.build(timeframe), symbols, timeframe, start, end, lake.location,
                period=period, exchange=market_data.exchange, on_chunk=lambda part: bar.update(part.rows), max_jump=settings().max_jump,
            )
        _report(instance, timeframe, summary)
        failed = dict(summary.failed_checks)
        print(
            f"{timeframe}: {summary.rows:,} rows, {summary.clean_rows:,} written to {summary.partitions} partitions, "
            f"{summary.quarantined_rows:,} quarantined; failing rows by check: {failed or 'none'}"
        )
        status = status or (1 if summary.blocking_failures else 0)  # a warning's set-aside rows are not a failure
    print(f"lake: {lake.location}")
    return status


def _report(instance: dg.DagsterInstance, timeframe: str, summary: BulkSummary) -> None:
    """One materialization per partition written, tagged with its dimensions as a run's is (the UI
    filters a dimension by them), reported in batches: one at a time took longer than the ingest."""
    asset, key = ("bars_1m", intraday_key) if timeframe == "1m" else ("bars_1d", daily_key)
    add_symbols(instance, {symbol for symbol, _ in summary.written})
    materializations = [
        dg.AssetMaterialization(
            asset_key=asset,
            partition=key(period, symbol),
            description="written by quantlake ingest --bulk",
            metadata={"source": "bulk backfill"},
            tags=get_tags_from_multi_partition_key(key(period, symbol)),
        )
        for symbol, period in sorted(summary.written)
    ]
    report_materializations(instance, materializations)
