"""features_1d when its bars are not there: a year with no bars of its own writes nothing and says
so (what Dagster's asset backfill of bars and features asks of the year after its range), and runs
of single partitions launched together wait for the warm-up year's bars another of them writes."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.events import DagsterEventType
from dagster._core.execution.api import execute_run
from dagster._core.storage.dagster_run import DagsterRun

import orchestration  # noqa: F401  # first: passes the settings down to the assets (a spawned run process imports this module)

# isort: split
import assets.derived
from assets.bars import bars_1d
from assets.clock import NOW_TAG
from assets.derived import BARS_CHECK, WARM_UP_CHECK, features_1d
from assets.partitions import add_symbols, daily_key, daily_partitions
from assets.resources import LakeResource, MarketDataResource

NOW = "2025-06-02T00:00:00+00:00"  # runs as of a fixed moment: no wall clock
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _resources(lake: Path) -> dict[str, object]:
    return {"lake": LakeResource(root=str(lake)), "market_data": MarketDataResource()}


def _features(lake: Path) -> dict[str, str]:
    return {str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((lake / "features").rglob("*.parquet"))}


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_a_year_without_bars_writes_no_features_and_says_why(tmp_path: Path) -> None:
    """Dagster's asset backfill of bars_1d and features_1d over 2022..2023 also targets features of
    2024 (they warm up on 2023's bars) and runs features over 2022..2024 in one run. 2024 has no
    bars: no file, and its materialization and a warning check name why; the other years are whole."""
    lake = tmp_path / "lake"
    with dg.instance_for_test() as instance:
        add_symbols(instance, ["AAPL"])
        for year in ("2022", "2023"):
            assert dg.materialize([bars_1d], partition_key=daily_key(year, "AAPL"), instance=instance, resources=_resources(lake), tags={NOW_TAG: NOW}).success
        ranged = dg.materialize(
            [features_1d], instance=instance, resources=_resources(lake), tags=dict(zip(RANGE_TAGS, ("AAPL|2022", "AAPL|2024"), strict=True)),
        )
        alone = dg.materialize([features_1d], partition_key=daily_key("2024", "AAPL"), instance=instance, resources=_resources(lake))
    assert ranged.success and alone.success
    mats = {m.partition: m.metadata for m in ranged.asset_materializations_for_node("features_1d")}
    assert {p: m["dagster/row_count"].value for p, m in mats.items()} == {"AAPL|2022": 251, "AAPL|2023": 250, "AAPL|2024": 0}
    assert "nothing_written" not in mats["AAPL|2023"]
    [single] = alone.asset_materializations_for_node("features_1d")
    for meta in (mats["AAPL|2024"], single.metadata):
        assert meta["nothing_written"].value == "no daily bars of AAPL in 2024 in the lake (bars_1d AAPL|2024)"  # type: ignore[attr-defined]
    assert sorted(_features(lake)) == [f"features/timeframe=1d/symbol=AAPL/year={y}/part.parquet" for y in (2022, 2023)]
    for result in (ranged, alone):
        bars, warm = _check(result, BARS_CHECK), _check(result, WARM_UP_CHECK)
        assert not bars.passed and bars.severity == dg.AssetCheckSeverity.WARN
        assert bars.metadata["years_without_bars"].value == "AAPL 2024"
        assert warm.passed  # 2024's warm-up year is there; a year with no bars is not "cold"


# --- runs of single partitions launched together ----------------------------------------------

ingest_defs = dg.Definitions(
    assets=[bars_1d, features_1d],
    jobs=[dg.define_asset_job("ingest_daily", selection=[bars_1d, features_1d], partitions_def=daily_partitions)],
    executor=dg.in_process_executor,
)


def _ingest_job(lake: Path) -> dg.JobDefinition:
    """The ingest job writing to `lake`: what the test process and a spawned run process both run."""
    return dg.Definitions.merge(ingest_defs, dg.Definitions(resources=_resources(lake))).resolve_job_def("ingest_daily")


def _create_run(instance: dg.DagsterInstance, lake: Path, year: str) -> tuple[InMemoryJob, DagsterRun]:
    """A run of bars and features of AAPL's `year`, created (Dagster records what it plans to
    materialize) but not started: what a job backfill or a sensor launches, one per partition."""
    job = _ingest_job(lake)
    tags = {"dagster/partition": str(daily_key(year, "AAPL")), "dagster/partition/year": year, "dagster/partition/symbol": "AAPL", NOW_TAG: NOW}
    return InMemoryJob(job), instance.create_run_for_job(job, run_config={}, tags=tags)


def _retries(instance: dg.DagsterInstance, run_id: str) -> int:
    return len(instance.all_logs(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    events = [e.dagster_event for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]
    return [e.event_specific_data for e in events if e is not None and isinstance(e.event_specific_data, dg.AssetCheckEvaluation)]


def _execute_in_own_process(home: str, lake: str, run_id: str) -> None:
    """A created run executed in this (spawned) process on the instance in `home`, as a run worker
    executes it; features wait 0.2 s between looks for bars, up to 1,000 times (a bound, not a timing)."""
    assets.derived.WAIT_SECONDS, assets.derived.WAIT_RETRIES = 0.2, 1000
    with dg.DagsterInstance.from_config(home) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if not execute_run(InMemoryJob(_ingest_job(Path(lake))), run, instance).success:
            raise SystemExit(1)


def test_runs_launched_together_wait_for_the_warm_up_years_bars(tmp_path: Path) -> None:
    """2022's and 2023's runs launched together; 2023's starts first: its features step waits
    (retries) until 2022's run has written its bars, then writes what runs in year order write.
    Each run in its own process, as Dagster runs them (two runs on threads of one process can
    deadlock in Dagster's logging set-up at a run's start, which takes every handler's lock)."""
    lake, reference, home = tmp_path / "lake", tmp_path / "reference", tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        add_symbols(instance, ["AAPL"])
        for year in ("2022", "2023"):  # the reference: one after the other
            job, run = _create_run(instance, reference, year)
            assert execute_run(job, run, instance).success
        (job, earlier), (_, later) = _create_run(instance, lake, "2022"), _create_run(instance, lake, "2023")
        runner = multiprocessing.get_context("spawn").Process(target=_execute_in_own_process, args=(str(home), str(lake), later.run_id))
        runner.start()
        waited = 0
        while runner.is_alive() and not _retries(instance, later.run_id) and waited < 600:  # until 2023's features wait
            time.sleep(0.2)
            waited += 1
        assert _retries(instance, later.run_id), "2023's features did not wait for 2022's bars"
        assert execute_run(job, earlier, instance).success
        runner.join(timeout=300)
        if runner.is_alive():  # hung: not left running after the test
            runner.kill()
            runner.join()
        assert runner.exitcode == 0, f"2023's run failed or hung (exit code {runner.exitcode})"
        assert instance.get_run_by_id(later.run_id).status == dg.DagsterRunStatus.SUCCESS  # type: ignore[union-attr]
        checks = {e.check_name: e.passed for e in _check_evaluations(instance, later.run_id)}
        assert checks[WARM_UP_CHECK] and checks[BARS_CHECK]
    assert _features(lake) == _features(reference) and len(_features(lake)) == 2


def test_a_run_waiting_for_bars_that_never_come_fails_naming_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2022's run was launched but never runs: 2023's features give up after their retries, naming
    the bars they waited for and the run meant to write them, and write nothing."""
    monkeypatch.setattr(assets.derived, "WAIT_SECONDS", 0)
    monkeypatch.setattr(assets.derived, "WAIT_RETRIES", 2)
    lake = tmp_path / "lake"
    with dg.instance_for_test() as instance:
        add_symbols(instance, ["AAPL"])
        (_, earlier), (job, later) = _create_run(instance, lake, "2022"), _create_run(instance, lake, "2023")
        result = execute_run(job, later, instance)
        assert not result.success and _retries(instance, later.run_id) == 2
        [failure] = instance.all_logs(later.run_id, of_type=DagsterEventType.STEP_FAILURE)
    error = failure.dagster_event.step_failure_data.error if failure.dagster_event else None
    assert error is not None
    text = f"{error.message} {error.cause.message if error.cause else ''}"
    assert f"bars_1d AAPL|2022 (run {earlier.run_id[:8]})" in text, text
    assert _features(lake) == {}
