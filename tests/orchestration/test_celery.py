"""Runs past one process: the chunked sweep equals the single-process sweep, and on two Celery workers
(Redis broker, persistent instance) the chunked sweep and an ingest backfill equal their
single-process results with steps in both workers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from assets.clock import NOW_TAG
from assets.partitions import add_symbols, daily_key
from assets.resources import LakeResource
from backtests.sweep import expand_grid, sweep
from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars, replace_partitions
from orchestration.fanout import ChunkedSweepConfig, chunk_bounds, chunked_sweep_job
from strategies.registry import load_strategy
from tests.orchestration.dagster_server import ROOT

SYMBOLS = ["AAPL", "MSFT"]
START, END = "2023-01-01", "2025-01-01"


def _fill_lake(root: Path) -> LakeResource:
    bars = SyntheticSource().fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return _fill_lake(tmp_path_factory.mktemp("lake"))


def _single_process(lake: LakeResource, config: dict[str, Any], end: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> pl.DataFrame:
    """The reference: backtests.sweep.sweep on the whole grid at once, in this process."""
    strategy = load_strategy(config["strategy"])
    bars = read_bars(lake.path, SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), end)
    on = bars.filter(pl.col("symbol") == "AAPL")
    return sweep(on, strategy, expand_grid(strategy, {}, config["grid"]), ChunkedSweepConfig(**config).backtest_config())


def _sweep_config(strategy: str, grid: dict[str, list[Any]], chunks: int) -> dict[str, Any]:
    return {"strategy": strategy, "params": {}, "grid": grid, "symbols": SYMBOLS, "start": START, "end": END, "chunks": chunks,
            "fees_bps": 1.0, "slippage_bps": 2.0, "timeframe": "1d"}


def test_chunk_bounds_cover_the_grid_in_order() -> None:
    assert chunk_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert chunk_bounds(2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(ValueError, match="n=0"):
        chunk_bounds(0, 2)


# sma_cross takes the fused kernel, rsi_reversion the generic stacked path, donchian_breakout the
# bracket kernel; these chunk counts leave chunks in which a swept parameter does not vary (its column
# is then missing from that chunk's own table).
CASES = [
    ("sma_cross", {"fast": [5, 10, 20], "slow": [30, 60, 90]}, 3),
    ("rsi_reversion", {"period": [7, 14], "lower": [20.0, 30.0], "upper": [70.0, 80.0]}, 5),
    ("donchian_breakout", {"entry_window": [10, 20, 40], "exit_window": [5, 10]}, 2),
]


@pytest.mark.parametrize(("strategy", "grid", "chunks"), CASES, ids=[c[0] for c in CASES])
def test_chunked_sweep_equals_the_single_process_sweep(lake: LakeResource, strategy: str, grid: dict[str, list[Any]], chunks: int) -> None:
    config = _sweep_config(strategy, grid, chunks)
    result = chunked_sweep_job.execute_in_process(run_config={"ops": {"split_sweep": {"config": config}}}, resources={"lake": lake})
    assert result.success
    assert len(result.output_for_node("sweep_chunk")) == chunks
    table = pl.read_parquet(lake.path / "research/parameter_sweep_chunked/results.parquet")
    assert_frame_equal(table, _single_process(lake, config), check_exact=True)
    [mat] = result.asset_materializations_for_node("collect_sweep")
    assert mat.metadata["chunks"].value == chunks and "data:image/png;base64," in str(mat.metadata["heatmap"].value)


# --- Two Celery workers on Redis -------------------------------------------------------------------

REDIS_URL = os.environ.get("QUANTLAKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")  # the first db we may claim
REDIS_CLAIM = "quantlake-test-claim"  # a test's claim on a database: two suites on one machine must not share a broker
REDIS_DBS = 16  # Redis's default number of databases
BIN = Path(sys.executable).parent
NOW = "2025-06-02T00:00:00+00:00"  # runs as of a fixed moment: no wall clock
BACKFILL = [("2023", "AAPL"), ("2024", "AAPL"), ("2024", "MSFT")]  # (year, symbol) partitions of ingest_daily_job
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _ranges(partitions: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Each symbol's years, in order: one run over them (contiguous here)."""
    out: dict[str, list[str]] = {}
    for year, symbol in sorted(partitions):
        out.setdefault(symbol, []).append(year)
    return out


def _claim_db(base_url: str, token: str) -> tuple[Any, str]:
    """The first database from the URL's on that no other test run holds, claimed (with an expiry, so a
    killed run's claim lapses) and emptied of anything but the claim: a second suite on the same machine
    (another checkout's CI) would otherwise flush this test's queues and its workers would wait forever."""
    import redis

    prefix, _, first = base_url.rpartition("/")
    for db in range(int(first or 0), REDIS_DBS):
        client = redis.Redis.from_url(f"{prefix}/{db}", socket_connect_timeout=2)
        if client.set(REDIS_CLAIM, token, nx=True, ex=1800):
            for key in client.scan_iter():
                if key != REDIS_CLAIM.encode():
                    client.delete(key)
            return client, f"{prefix}/{db}"
        client.close()
    raise AssertionError(f"every Redis database from {base_url} is claimed by another test run ({REDIS_CLAIM})")


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A Redis database of this test's own, empty, and emptied after; skips without Redis, fails in CI."""
    try:
        import redis

        probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        probe.ping()
        probe.close()
    except Exception as exc:  # ImportError or no server: the reason is printed by the skip
        if os.environ.get("CI"):
            raise AssertionError(f"Redis at {REDIS_URL} is required in CI but unusable: {exc!r}") from exc
        pytest.skip(f"Redis at {REDIS_URL} unusable: {exc!r}")
    client, url = _claim_db(REDIS_URL, uuid.uuid4().hex)
    try:
        yield url
    finally:
        client.flushdb()  # the claim goes too
        client.close()


def test_two_runs_on_one_machine_never_share_a_redis_database(redis_db: str) -> None:
    import redis

    other_client, other = _claim_db(REDIS_URL, "another suite")
    try:
        assert other != redis_db
        mine = redis.Redis.from_url(redis_db)
        mine.set("queued", "1")
        other_client.flushdb()  # the other run's clean-up leaves this test's database alone
        assert mine.get("queued") == b"1"
        mine.close()
    finally:
        other_client.flushdb()
        other_client.close()


@dataclass
class Cluster:
    env: dict[str, str]
    home: Path
    lake: Path
    logs: Path
    workers: list[str]
    worker_logs: list[Path]

    def run(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        """`dagster job execute ...` as a user runs it, with this cluster's environment."""
        with (self.logs / f"{name}.log").open("wb") as log:
            return subprocess.Popen([str(BIN / "dagster"), "job", "execute", "-m", "orchestration.definitions", *args],
                                    cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, proc: subprocess.Popen[bytes], name: str) -> None:
        code = proc.wait(timeout=600)
        assert code == 0, f"{name} exited {code}:\n" + (self.logs / f"{name}.log").read_text()[-3000:]


def _ping(broker: str, names: list[str], procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 240.0) -> None:
    """Until every worker answers a ping through the broker (started, connected, consuming)."""
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    try:
        while True:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            answered = {name for reply in app.control.ping(destination=names, timeout=1.0) for name in reply}
            if answered >= set(names):
                return
            assert time.monotonic() < deadline, f"workers {sorted(set(names) - answered)} did not answer within {timeout:.0f} s"
            time.sleep(1.0)
    finally:
        app.close()


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """The worker's whole process group (dagster-celery, celery, its pool): a warm shutdown, then
    whatever is left of the group is killed."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so an exited group stops answering
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def cluster(redis_db: str, tmp_path: Path) -> Iterator[Cluster]:
    """A persistent instance (SQLite in a tmp DAGSTER_HOME), a lake, and two `dagster-celery`
    workers of one process each, started as deploy/celery/workers.yaml says."""
    home, lake, logs = tmp_path / "home", tmp_path / "lake", tmp_path / "logs"
    for d in (home, lake, logs):
        d.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # Create the instance's storage once, here: both workers open the instance at start, and two
    # processes creating a fresh SQLite storage at once can stamp its schema twice.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        add_symbols(instance, sorted({s for _, s in BACKFILL}))
    env = {k: v for k, v in os.environ.items() if k != "QUANTLAKE_CELERY_BACKEND"}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # dagster-celery runs `celery` from PATH
        "DAGSTER_HOME": str(home),
        "QUANTLAKE_LAKE_DIR": str(lake),
        "QUANTLAKE_EXECUTOR": "celery",
        "QUANTLAKE_CELERY_BROKER": redis_db,
        "QUANTLAKE_LOG_FORMAT": "json",  # as a deployment logs: every worker line must be JSON (checked at the end)
    }
    tag = uuid.uuid4().hex[:6]
    names = [f"quantlake-{tag}-{i}" for i in (1, 2)]
    procs: list[subprocess.Popen[bytes]] = []
    worker_logs = [logs / f"{n}.log" for n in names]
    try:
        for name, log_path in zip(names, worker_logs, strict=True):
            with log_path.open("wb") as log:
                procs.append(subprocess.Popen(
                    [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "deploy/celery/workers.yaml",
                     "-i", "orchestration.definitions", "-n", name, "-l", "INFO", "--", "--concurrency=1"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))
        hostnames = [f"{n}@{os.uname().nodename}" for n in names]
        _ping(redis_db, hostnames, procs, worker_logs)
        yield Cluster(env, home, lake, logs, hostnames, worker_logs)
    finally:
        for proc in procs:
            _stop(proc)


@dataclass(frozen=True)
class StepPlace:
    worker: str  # the Celery worker's hostname that took the step
    pid: int  # the process that ran it


def _places(instance: dg.DagsterInstance, run_id: str) -> dict[str, StepPlace]:
    """Where each step of a run ran, from the run's own event log."""
    workers: dict[str, str] = {}
    pids: dict[str, int] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "ENGINE_EVENT" and "Celery worker" in (event.engine_event_data.metadata or {}):
            workers[event.step_key] = str(event.engine_event_data.metadata["Celery worker"].value)
        if event.event_type_value == "STEP_START" and event.pid is not None:
            pids[event.step_key] = event.pid
    assert set(pids) <= set(workers), f"steps {sorted(set(pids) - set(workers))} ran outside the Celery workers"
    return {key: StepPlace(workers[key], pid) for key, pid in pids.items()}


def _digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*.parquet") if "research" not in p.relative_to(root).parts)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _ingest_in_process(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The single-process reference: the same partitions of the same job, in this process."""
    from orchestration.definitions import defs

    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(lake))
    job = defs.resolve_job_def("ingest_daily_job")
    with dg.instance_for_test() as instance:
        add_symbols(instance, sorted({s for _, s in BACKFILL}))
        for year, symbol in BACKFILL:
            result = job.execute_in_process(partition_key=daily_key(year, symbol), instance=instance, tags={NOW_TAG: NOW})
            assert result.success


@pytest.mark.slow
def test_celery_workers_run_an_ingest_backfill_and_a_chunked_sweep_as_one_process_would(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backfill as the daily assets' single-run policy makes it: one run per symbol over its years,
    # all launched together; their steps queue on the broker. features_1d of a year warms up on the
    # year before's bars, which its own run writes first (runs of single partitions launched together
    # would race for them: features_1d's warm_up_year_present check names that).
    runs = []
    for symbol, years in _ranges(BACKFILL).items():
        first, last = daily_key(years[0], symbol), daily_key(years[-1], symbol)
        tags = {RANGE_START: str(first), RANGE_END: str(last)} if first != last else {
            "dagster/partition": str(first), "dagster/partition/year": years[0], "dagster/partition/symbol": symbol}
        name = f"ingest-{symbol}-{years[0]}-{years[-1]}"
        runs.append((name, cluster.run("-j", "ingest_daily_job", "--tags", json.dumps(tags | {NOW_TAG: NOW}), name=name)))
    for name, proc in runs:
        cluster.wait(proc, name)
    reference = tmp_path / "reference_lake"
    _ingest_in_process(reference, monkeypatch)
    ingested = _digest(cluster.lake)
    assert len(ingested) >= 2 * len(BACKFILL) and ingested == _digest(reference), "the backfill on Celery differs from the single-process one"

    # The chunked sweep on the bars the workers ingested.
    config = _sweep_config("sma_cross", {"fast": [5, 10, 20], "slow": [30, 60, 90]}, 4) | {"symbols": ["AAPL"]}
    run_config = tmp_path / "sweep.yaml"
    run_config.write_text(yaml.safe_dump({"ops": {"split_sweep": {"config": config}}}))
    cluster.wait(cluster.run("-j", "chunked_sweep_job", "-c", str(run_config), "--tags", json.dumps({NOW_TAG: NOW}), name="sweep"), "sweep")
    table = pl.read_parquet(cluster.lake / "research/parameter_sweep_chunked/results.parquet")
    assert_frame_equal(table, _single_process(LakeResource(root=str(cluster.lake)), config), check_exact=True)

    with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
        records = instance.get_runs()
        assert len(records) == len(_ranges(BACKFILL)) + 1 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in records)
        places = [(r.job_name, key, place) for r in records for key, place in _places(instance, r.run_id).items()]
    chunks = [place for job, key, place in places if job == "chunked_sweep_job" and key.startswith("sweep_chunk[")]
    assert len(chunks) == 4
    assert sum(job == "ingest_daily_job" for job, _, _ in places) >= 2 * len(_ranges(BACKFILL))  # bars_1d and features_1d per run
    # Every step ran in one of our two workers, and the chunks in both of them (two processes).
    assert {place.worker for _, _, place in places} <= set(cluster.workers), places
    assert {place.worker for place in chunks} == set(cluster.workers), chunks
    assert len({place.pid for place in chunks}) == 2, chunks
    # The workers ran real steps in JSON mode: each line they wrote is one JSON object.
    for log in cluster.worker_logs:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        assert lines, f"{log.name} is empty"
        not_json = [line for line in lines if not _is_json_object(line)]
        assert not_json == [], f"{log.name}: {len(not_json)} of {len(lines)} lines are not JSON, first {not_json[0][:200]!r}"


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_an_open_end_is_pinned_in_the_plan_every_chunk_reads(lake: LakeResource) -> None:
    """Chunks start at different moments (without a now tag, each step's now is its own clock): the
    plan they all read carries the run's now as the end, and the bars up to it are swept."""
    grid = {"fast": [5, 10], "slow": [30, 60]}
    config = _sweep_config("sma_cross", grid, 2) | {"end": ""}
    result = chunked_sweep_job.execute_in_process(
        run_config={"ops": {"split_sweep": {"config": config}}}, resources={"lake": lake}, tags={NOW_TAG: "2024-07-01T00:00:00+00:00"}
    )
    assert result.success
    assert result.output_for_node("split_sweep", "plan").config["end"] == "2024-07-01T00:00:00"
    table = pl.read_parquet(lake.path / "research/parameter_sweep_chunked/results.parquet")
    assert_frame_equal(table, _single_process(lake, config | {"end": "2024-07-01"}, end=datetime(2024, 7, 1, tzinfo=UTC)), check_exact=True)
