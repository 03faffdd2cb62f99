"""A run that hangs without dying never stays STARTED: run monitoring fails it past its job's limit.

Through Dagster: the default instance config (orchestration/default_instance.yaml, the launcher it
names), the real Definitions loaded as the daemon loads them, a run of a job created with the tags
the daemon gives it (`remote_job.run_tags`), started, then the run-monitoring daemon's own
iteration on a frozen clock just before and just after the job's `dagster/max_runtime`. Then the
run-failure alert sensor and the run-retries daemon, one iteration each, react to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import time_machine
import yaml
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.auto_run_reexecution.event_log_consumer import EventLogConsumerDaemon
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.sensor import execute_sensor_iteration

from assets.run_limits import MAX_RUNTIME_SECONDS, MAX_RUNTIME_TAG
from orchestration.home import DEFAULT_INSTANCE

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "quantlake"
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday's session
LOG = logging.getLogger("test.run_monitoring")
KIND = {
    "ingest_intraday_job": "ingest",
    "ingest_daily_job": "ingest",
    "ingest_news_job": "ingest",
    "screener_job": "ingest",
    "decide_job": "trading",
    "end_of_day_job": "trading",
    "kill_switch_job": "trading",
    "resume_job": "trading",
    "paper_session_job": "simulation",
    "backtest_job": "research",
    "research_job": "research",
    "chunked_sweep_job": "research",
    "retention_job": "maintenance",
    "compact_bars_job": "maintenance",
}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkspaceProcessContext]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DEFAULT_INSTANCE.read_text())
    for name, value in {
        "DAGSTER_HOME": str(home),
        "QUANTLAKE_LAKE_DIR": str(tmp_path / "lake"),
        "QUANTLAKE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        "QUANTLAKE_SIM_STATE": str(tmp_path / "sim.json"),
        "QUANTLAKE_ALERT_WEBHOOK": "",
    }.items():
        monkeypatch.setenv(name, value)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="orchestration.definitions", attribute="defs", working_directory=str(ROOT)),
        location_name=LOCATION,
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"  # the launcher a user's instance has
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
            yield context


def _repo(context: WorkspaceProcessContext):  # type: ignore[no-untyped-def]
    [repo] = context.create_request_context().get_code_location(LOCATION).get_repositories().values()
    return repo


def _start_run(context: WorkspaceProcessContext, job_name: str, tags: dict[str, str]) -> str:
    """A run of `job_name` as the daemon creates it (the job's run tags), its worker started, then silent."""
    from orchestration.definitions import defs

    remote = _repo(context).get_full_job(job_name)
    instance = context.instance
    run = instance.create_run_for_job(
        defs.resolve_job_def(job_name),
        tags={**remote.run_tags, **tags},
        remote_job_origin=remote.get_remote_origin(),
        job_code_origin=remote.get_python_origin(),
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, job_name=job_name), run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
    return run.run_id


def _monitor(context: WorkspaceProcessContext) -> None:
    list(execute_run_monitoring_iteration(context, LOG))


def _status(context: WorkspaceProcessContext, run_id: str) -> dg.DagsterRunStatus:
    run = context.instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_every_job_has_its_kinds_limit_and_the_instances_bound_the_rest(workspace: WorkspaceProcessContext) -> None:
    repo = _repo(workspace)
    names = {job.name for job in repo.get_all_jobs() if not job.name.startswith("__")}
    assert names == set(KIND), "a new job needs its kind in assets/run_limits.py (and here)"
    for name, kind in KIND.items():
        assert repo.get_full_job(name).run_tags.get(MAX_RUNTIME_TAG) == str(MAX_RUNTIME_SECONDS[kind]), name
    assert workspace.instance.run_monitoring_enabled
    assert workspace.instance.run_monitoring_max_runtime_seconds == 6 * 3600  # a run of a job with no tag
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert deploy["run_monitoring"]["enabled"] and deploy["run_monitoring"]["max_runtime_seconds"] == 6 * 3600


def test_a_hung_ingest_run_is_failed_past_30_minutes_alerted_and_retried(
    workspace: WorkspaceProcessContext, caplog: pytest.LogCaptureFixture
) -> None:
    instance = workspace.instance
    with time_machine.travel(T0, tick=False) as clock:
        repo = _repo(workspace)
        instance.start_sensor(repo.get_sensor("run_failure_alert_sensor"))
        list(execute_sensor_iteration(workspace, LOG, None, None))  # the sensor's first tick sets its cursor
        retries = EventLogConsumerDaemon()
        list(retries.run_iteration(workspace))
        run_id = _start_run(workspace, "ingest_intraday_job", {"dagster/partition": "2026-11-24|AAPL"})

        clock.move_to(T0 + timedelta(minutes=29))
        _monitor(workspace)
        assert _status(workspace, run_id) == dg.DagsterRunStatus.STARTED  # within its 30 minutes: left alone

        clock.move_to(T0 + timedelta(minutes=31))
        _monitor(workspace)
        assert _status(workspace, run_id) == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(run_id)]
        assert any("Exceeded maximum runtime of 1800 seconds" in m or "exceeding maximum runtime of 1800" in m for m in messages), messages

        clock.move_to(T0 + timedelta(minutes=32))
        with caplog.at_level(logging.ERROR, logger="quantlake.alerts"):
            list(execute_sensor_iteration(workspace, LOG, None, None))
        alerts = [r.getMessage() for r in caplog.records if r.name == "quantlake.alerts"]
        assert any("run failed: ingest_intraday_job" in a and run_id in a for a in alerts), alerts

        list(retries.run_iteration(workspace))
        [retry] = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        assert retry.job_name == "ingest_intraday_job"
        assert retry.tags["dagster/partition"] == "2026-11-24|AAPL"
        assert retry.tags[MAX_RUNTIME_TAG] == "1800"  # the retry is bounded too


def test_a_trading_run_is_bounded_at_10_minutes_and_a_launch_may_lift_its_limit(workspace: WorkspaceProcessContext) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        decide = _start_run(workspace, "decide_job", {})
        sweep = _start_run(workspace, "research_job", {MAX_RUNTIME_TAG: "0"})  # a launch that lifts its limit
        clock.move_to(T0 + timedelta(minutes=11))
        _monitor(workspace)
        assert _status(workspace, decide) == dg.DagsterRunStatus.FAILURE
        clock.move_to(T0 + timedelta(days=2))
        _monitor(workspace)
        assert _status(workspace, sweep) == dg.DagsterRunStatus.STARTED
