"""A missed session's 1-minute bars are fetched again (missed_sessions_sensor), once per attempt.

The soak (tests/soak/test_soak_faults.py) drives the same sensor through the daemon's iterations; here
its decisions at chosen instants, on an instance whose materializations and runs are written directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import time_machine

from orchestration.sensors import REFETCH_RUN_TAG, missed_sessions_sensor

NY = ZoneInfo("America/New_York")
MON, TUE, WED = "2026-11-23", "2026-11-24", "2026-11-25"


def _ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc,arg-type]


@pytest.fixture
def instance(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,MSFT")
    for name in ("QUANTLAKE_REFETCH_SESSIONS", "QUANTLAKE_REFETCH_GRACE_MIN", "QUANTLAKE_REFETCH_BACKOFF_MIN", "QUANTLAKE_REFETCH_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("symbols", ["AAPL", "MSFT"])
        yield inst


def _materialized(instance: dg.DagsterInstance, day: str, symbol: str, last: str, quarantined: int = 0) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("bars_1m", partition=f"{day}|{symbol}", metadata={"last_ts": last, "quarantined_rows": quarantined})
    )


def _complete(instance: dg.DagsterInstance, *days: str) -> None:
    for day in days:
        close = "18:59" if day == "2026-11-27" else "20:59"  # the half day closes at 13:00 New York
        for s in ("AAPL", "MSFT"):
            _materialized(instance, day, s, f"{day} {close}:00+00:00")


def _evaluate(instance: dg.DagsterInstance, at: datetime, cursor: str | None) -> tuple[list[dg.RunRequest], str, str | None]:
    with time_machine.travel(at, tick=False):
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        result = missed_sessions_sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], result.skip_message or "", context.cursor
    assert isinstance(result, dg.SensorResult)
    return list(result.run_requests or []), "", context.cursor


def _run(instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus, at: datetime) -> dg.DagsterRun:
    """A finished run of the request (what the daemon would have launched), ended at `at`."""
    run = instance.add_run(
        dg.DagsterRun(job_name="ingest_intraday_job", run_id=str(uuid.uuid4()), tags={**request.tags, "dagster/partition": str(request.partition_key), "dagster/run_key": request.run_key or ""})
    )
    with time_machine.travel(at, tick=False):
        instance.handle_run_event(run.run_id, dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name))
        kind = dg.DagsterEventType.RUN_SUCCESS if status == dg.DagsterRunStatus.SUCCESS else dg.DagsterEventType.RUN_FAILURE
        instance.handle_run_event(run.run_id, dg.DagsterEvent(kind.value, job_name=run.job_name))
    return run


def test_a_missing_or_incomplete_session_is_asked_again_after_the_close(instance: dg.DagsterInstance) -> None:
    # The sensor started Monday morning; Monday is complete. Tuesday: AAPL never written (the close's
    # ingest failed), MSFT written only to 15:00 (an intraday run, then the close failed).
    _, _, cursor = _evaluate(instance, _ny(2026, 11, 23, 9, 35), None)
    assert cursor is not None and datetime.fromisoformat(cursor) == _ny(2026, 11, 23, 9, 35)
    _complete(instance, MON)
    _materialized(instance, TUE, "MSFT", f"{TUE} 20:00:00+00:00")
    # Right after Tuesday's close nothing yet: the close's ingest and its retries have the first hour.
    requests, reason, _ = _evaluate(instance, _ny(2026, 11, 24, 16, 30), cursor)
    assert requests == [] and reason == "no missed session"
    requests, _, _ = _evaluate(instance, _ny(2026, 11, 25, 9, 35), cursor)
    assert [(r.run_key, str(r.partition_key)) for r in requests] == [
        (f"refetch|{TUE}|AAPL|1", f"{TUE}|AAPL"),
        (f"refetch|{TUE}|MSFT|1", f"{TUE}|MSFT"),
    ]
    assert all(r.tags[REFETCH_RUN_TAG] == "1" for r in requests)


def test_sessions_before_the_sensor_started_are_not_refetched(instance: dg.DagsterInstance) -> None:
    # A deployment started on Wednesday: Monday and Tuesday have no bars, but that is a backfill's job.
    _, _, cursor = _evaluate(instance, _ny(2026, 11, 25, 9, 35), None)
    requests, reason, _ = _evaluate(instance, _ny(2026, 11, 25, 12, 0), cursor)
    assert requests == [] and reason == "no missed session"


def test_quarantined_rows_count_as_done(instance: dg.DagsterInstance) -> None:
    _, _, cursor = _evaluate(instance, _ny(2026, 11, 23, 9, 0), None)
    _complete(instance, MON)
    _materialized(instance, TUE, "AAPL", f"{TUE} 20:00:00+00:00", quarantined=59)  # the last hour failed validation
    _materialized(instance, TUE, "MSFT", f"{TUE} 20:59:00+00:00")
    requests, _, _ = _evaluate(instance, _ny(2026, 11, 25, 9, 35), cursor)
    assert requests == []


def test_each_attempt_once_then_backoff_then_given_up(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL")
    _, _, cursor = _evaluate(instance, _ny(2026, 11, 23, 9, 0), None)
    _complete(instance, MON)
    at = _ny(2026, 11, 25, 9, 35)
    for attempt in (1, 2, 3):
        [request], _, _ = _evaluate(instance, at, cursor)
        assert request.run_key == f"refetch|{TUE}|AAPL|{attempt}"
        run = instance.add_run(dg.DagsterRun(job_name="ingest_intraday_job", run_id=str(uuid.uuid4()), tags={**request.tags, "dagster/partition": f"{TUE}|AAPL"}))
        # In flight: not asked again.
        assert _evaluate(instance, at, cursor)[0] == []
        instance.delete_run(run.run_id)
        _run(instance, request, dg.DagsterRunStatus.FAILURE, at)
        # Failed: not before the backoff (60 min) after it ended.
        assert _evaluate(instance, at.replace(minute=59), cursor)[0] == []
        at = at.replace(hour=at.hour + 2)
    requests, reason, _ = _evaluate(instance, at, cursor)
    assert requests == [] and reason == f"{TUE}|AAPL: 3 refetches failed, not asked again"


def test_a_refetch_that_succeeded_ends_it(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL")
    _, _, cursor = _evaluate(instance, _ny(2026, 11, 23, 9, 0), None)
    _complete(instance, MON)
    [request], _, _ = _evaluate(instance, _ny(2026, 11, 25, 9, 35), cursor)
    _run(instance, request, dg.DagsterRunStatus.SUCCESS, _ny(2026, 11, 25, 9, 36))
    _materialized(instance, TUE, "AAPL", f"{TUE} 20:59:00+00:00")
    assert _evaluate(instance, _ny(2026, 11, 25, 12, 0), cursor)[0] == []


def test_only_the_last_n_sessions(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL")
    monkeypatch.setenv("QUANTLAKE_REFETCH_SESSIONS", "2")
    _, _, cursor = _evaluate(instance, _ny(2026, 11, 16, 9, 0), None)
    # Nothing written since the 16th: only the two sessions before Wednesday's 09:35 (less the grace).
    requests, _, _ = _evaluate(instance, _ny(2026, 11, 25, 9, 35), cursor)
    assert [r.run_key for r in requests] == [f"refetch|{MON}|AAPL|1", f"refetch|{TUE}|AAPL|1"]


def test_a_bad_setting_is_a_clear_error(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_REFETCH_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="QUANTLAKE_REFETCH_ATTEMPTS='0': Input should be greater than or equal to 1"):
        _evaluate(instance, _ny(2026, 11, 25, 9, 35), _ny(2026, 11, 23, 9, 0).isoformat())
