"""The demo run: ingest the default universe and range through the real jobs, with a progress bar.

Runs every partition in-process against the persistent Dagster instance (DAGSTER_HOME), so the UI
opened afterwards shows the same materializations and check results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from tqdm import tqdm

from assets.partitions import daily_key, intraday_key
from lake.calendar import session_bounds, trading_days

# Step logs still reach the instance (and the UI); the terminal shows warnings and the progress bar.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class IngestSummary:
    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)
    checks_passed: int = 0
    checks_failed: Counter[str] = field(default_factory=Counter)

    def add(self, label: str, result: dg.ExecuteInProcessResult) -> None:
        self.runs += 1
        if not result.success:
            self.failed_runs.append(label)
        for event in result.get_asset_materialization_events():
            mat = event.materialization
            rows = mat.metadata.get("dagster/row_count")
            if rows is not None:
                self.rows[mat.asset_key.to_user_string()] += int(rows.value)  # type: ignore[arg-type]
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                self.checks_passed += 1
            else:
                self.checks_failed[evaluation.check_name] += 1


def last_closed_session(now: datetime | None = None, exchange: str = "XNYS") -> date:
    now = now or datetime.now(UTC)
    days = trading_days(now.date() - timedelta(days=10), now.date(), exchange)
    closed = [d for d in days if session_bounds(d, exchange)[1] <= now]
    return closed[-1]


def default_ranges(end: date, minute_days: int = 20, daily_days: int = 252) -> tuple[list[date], list[str]]:
    """The last `minute_days` sessions for 1m bars, and the years covering the last `daily_days` sessions."""
    sessions = trading_days(end - timedelta(days=int(daily_days * 1.6) + 10), end)
    minute_sessions = sessions[-minute_days:]
    years = sorted({str(d.year) for d in sessions[-daily_days:]})
    return minute_sessions, years


def run_partitions(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    days: Iterable[date],
    years: Iterable[str],
    symbols: list[str],
    summary: IngestSummary,
    progress: bool = True,
) -> IngestSummary:
    work: list[tuple[str, str, dg.MultiPartitionKey]] = [
        ("ingest_daily_job", f"1d {y} {s}", daily_key(y, s)) for y in years for s in symbols
    ] + [("ingest_intraday_job", f"1m {d} {s}", intraday_key(d.isoformat(), s)) for d in days for s in symbols]
    jobs = {name: defs.resolve_job_def(name) for name in {w[0] for w in work}}
    for job_name, label, key in tqdm(work, desc="ingest", unit="partition", disable=not progress):
        result = jobs[job_name].execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        summary.add(label, result)
    return summary
