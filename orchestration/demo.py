"""The demo run: ingest the default universe and range through the real jobs, with a progress bar.

Runs every partition in-process against the persistent Dagster instance (DAGSTER_HOME), so the UI
opened afterwards shows the same materializations and check results.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import dagster as dg
from tqdm import tqdm

from assets.partitions import (
    DEMO_DAILY_SESSIONS,
    DEMO_MINUTE_SESSIONS,
    add_symbols,
    daily_key,
    intraday_key,
    recent_sessions,
    unknown_periods,
)
from assets.partitions import last_closed_session as _last_closed_session

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
    return _last_closed_session(now or datetime.now(UTC), exchange)


def default_ranges(end: date, minute_days: int = DEMO_MINUTE_SESSIONS, daily_days: int = DEMO_DAILY_SESSIONS) -> tuple[list[date], list[str]]:
    """The last `minute_days` sessions for 1m bars, and the years covering the last `daily_days` sessions
    (by default where the partitions start: assets.partitions.default_starts)."""
    minute_sessions = recent_sessions(end, minute_days)
    years = sorted({str(d.year) for d in recent_sessions(end, daily_days)})
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
    for name, job in jobs.items():
        missing = unknown_periods(job.partitions_def, [key for job_name, _, key in work if job_name == name])  # type: ignore[arg-type]
        if missing:
            raise ValueError(
                f"{name}: no partition {missing[0]} ({len(missing)} missing): it is before QUANTLAKE_PARTITION_START "
                f"(default: where the demo's data starts) or after today; set QUANTLAKE_PARTITION_START and reload"
            )
    add_symbols(instance, symbols)
    for job_name, label, key in tqdm(work, desc="ingest", unit="partition", disable=not progress):
        result = jobs[job_name].execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        summary.add(label, result)
    return summary
