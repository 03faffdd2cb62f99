"""A week of the deployment with a short retention: Sunday's scheduled retention run deletes and
archives as configured, and everything the soak checks still holds (asset status, reports kept,
the ledger's replay, every scheduled run once or deleted)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from tests.soak.checks import check_all, check_retention
from tests.soak.harness import SoakSettings, run_soak
from trading.ledger import Ledger
from trading.ledger.archive import restore_events

SHORT = {
    "QUANTLAKE_RETENTION_RUNS_DAYS": "2",
    "QUANTLAKE_RETENTION_REPORTS_DAYS": "2",
    "QUANTLAKE_RETENTION_QUARANTINE_DAYS": "2",
    "QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS": "2",
}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes on a quiet machine; several times that beside other work
@pytest.mark.skipif(os.environ.get("QUANTLAKE_SOAK") != "1", reason="a soak (minutes): QUANTLAKE_SOAK=1 or `make soak` runs it")
def test_thanksgiving_week_end_with_a_two_day_retention(tmp_path: Path) -> None:
    # Wed 2026-11-25 .. Sun 11-29 (Thursday a holiday, Friday a half day); the retention runs
    # Sunday 03:00 New York with a two-day cutoff: Friday 03:00.
    result = run_soak(SoakSettings(start=date(2026, 11, 25), end=date(2026, 11, 29), work=tmp_path, env=SHORT))
    stats, problems = check_all(result)
    assert problems == [], "\n".join(problems)
    [retention] = [r for r in result.runs if r.job_name == "retention_job"]
    with dg.DagsterInstance.from_config(str(result.home)) as instance:
        assert retention.run_id in {r.run_id for r in instance.get_runs()}
        [output] = [e.dagster_event for e in instance.all_logs(retention.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT) if e.dagster_event]
        counts = {k: v.value for k, v in output.step_output_data.metadata.items()}
        left = {r.run_id for r in instance.get_runs()}
        assert check_retention(result, instance) == []
    # Wednesday's report went (older than two days), Friday's stayed.
    assert sorted(p.name for p in (result.lake / "reports" / "eod").iterdir()) == ["2026-11-27.md"]
    assert counts["report_files"] == 1 and int(str(counts["bytes_freed"])) > 0
    # Superseded runs went; each 1-minute partition's run (its latest materialization) stayed.
    # (result.runs is read after the soak: the deleted runs are already gone from it.)
    assert int(str(counts["runs_deleted"])) > 0 and left == {r.run_id for r in result.runs}
    # The ledger's events before Friday 03:00 are archived, an exact copy, and the ledger keeps them all.
    with Ledger(result.ledger_url) as ledger:
        events = list(ledger.events())
    archived = list(restore_events(result.lake / "archive" / "ledger"))
    assert 0 < len(archived) == int(str(counts["ledger_events_archived"])) < len(events) and archived == events[: len(archived)]
    print(stats, counts)
