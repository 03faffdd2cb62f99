"""Retention through `retention_job` on frozen dates: old things go, recent things stay, runs in
progress and the runs the UI's asset status reads stay, and the ledger's archive replays to the
ledger's projection."""

from __future__ import annotations

import json
import operator
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypedDict, cast

import dagster as dg
import polars as pl
import pytest
import time_machine
from dagster._utils.schedules import cron_string_iterator
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from orchestration.definitions import defs
from orchestration.retention import RetentionPolicy, retention_policy
from trading.agents.cache import CacheMode, ResponseCache
from trading.brokers.base import Fill
from trading.events import Event, EventType
from trading.graph.checkpoint import open_checkpointer
from trading.ledger import Ledger, project, projections, replay_portfolio
from trading.ledger.archive import ArchiveError, archived_files, restore_events, verify_archive
from trading.ledger.compaction import compacted
from trading.models import Mode, Side

NOW = datetime(2026, 6, 10, 7, 0, tzinfo=UTC)  # a Wednesday; 90 days before: 2026-03-12
OLD = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
RECENT = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
parts = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=parts)
def part_asset() -> int:
    return 1


@dg.asset
def plain_asset() -> int:
    return 1


@dg.op
def boom() -> None:
    raise RuntimeError("fails on purpose")


@dg.job
def failing_job() -> None:
    boom()


@dg.job(partitions_def=parts)
def failing_partitioned_job() -> None:
    boom()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture(autouse=True)
def _policy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RUNS", "QUARANTINE", "REPORTS", "LLM_CACHE", "LEDGER_ARCHIVE", "LEDGER_COMPACT", "CHECKPOINT"):
        monkeypatch.delenv(f"QUANTLAKE_RETENTION_{var}_DAYS", raising=False)


def _at(when: datetime, fn: object) -> str:
    with time_machine.travel(when, tick=False):
        result = fn()  # type: ignore[operator]
    return str(result.run_id)


def _materialize(instance: dg.DagsterInstance, when: datetime, asset: dg.AssetsDefinition, partition: str | None = None) -> str:
    return _at(when, lambda: dg.materialize([asset], instance=instance, partition_key=partition))


def _fill(at: datetime, side: Side, qty: float, price: float) -> Event:
    fill = Fill(fill_id=uuid.uuid4().hex, client_order_id=f"ql-{uuid.uuid4().hex}", symbol="AAPL", side=side, quantity=qty, price=price, commission=1.0, ts=at)
    return Event(type=EventType.FILL, run_id="r", mode=Mode.SIMULATION, symbol="AAPL", as_of=at, recorded_at=at, payload=fill.model_dump(mode="json"))


def _ledger_events() -> list[Event]:
    deposit = Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.SIMULATION, payload={"amount": 100_000.0}, recorded_at=OLD - timedelta(days=1))
    fills = [_fill(OLD + timedelta(days=7 * i), Side.BUY if i % 3 else Side.SELL, 10 + i, 100.0 + i) for i in range(22)]  # to 2026-06-01
    return [deposit, *fills]


def _lake_files(lake: Path) -> None:
    frame = pl.DataFrame({"ts": [OLD], "symbol": ["AAPL"], "reason": ["high < low"]})
    for period in ("date=2025-12-01", "date=2026-06-09", "year=2025", "year=2026"):
        folder = lake / "quarantine" / "timeframe=1m" / "symbol=AAPL" / period
        folder.mkdir(parents=True)
        frame.write_parquet(folder / "part.parquet")
    eod = lake / "reports" / "eod"
    eod.mkdir(parents=True)
    for name in ("2026-01-02.md", "2026-06-09.md", "notes.md"):
        (eod / name).write_text(f"# {name}\n")


def _run_retention(instance: dg.DagsterInstance, tmp_path: Path, ledger_url: str, cache: Path, now: datetime = NOW) -> dg.ExecuteInProcessResult:
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "trading": TradingResource(mode="simulation", ledger_url=ledger_url, cache_dir=str(cache))}
    with time_machine.travel(now, tick=False):
        return defs.resolve_job_def("retention_job").execute_in_process(instance=instance, resources=resources, tags={NOW_TAG: now.isoformat()})


def test_retention_job_removes_the_old_and_keeps_the_recent(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_RETENTION_QUARANTINE_DAYS", "90")
    monkeypatch.setenv("QUANTLAKE_RETENTION_REPORTS_DAYS", "90")
    # Dagster runs: superseded materializations go, the latest of each asset partition stays.
    a_old = _materialize(instance, OLD, part_asset, "a")
    a_latest = _materialize(instance, OLD + timedelta(days=1), part_asset, "a")  # old, but p|a's latest
    b_only = _materialize(instance, OLD, part_asset, "b")
    plain_old = _materialize(instance, OLD, plain_asset)
    plain_recent = _materialize(instance, RECENT, plain_asset)
    failed_old = _at(OLD, lambda: failing_job.execute_in_process(instance=instance, raise_on_error=False))
    with time_machine.travel(OLD, tick=False):
        in_progress = instance.create_run_for_job(failing_job, status=dg.DagsterRunStatus.STARTED).run_id
    failed_last = _at(OLD + timedelta(days=2), lambda: failing_job.execute_in_process(instance=instance, raise_on_error=False))  # its job's last run
    # The lake, the model cache and the ledger.
    lake = tmp_path / "lake"
    _lake_files(lake)
    cache = tmp_path / "llm_cache"
    recorder = ResponseCache(cache, CacheMode.RECORD)
    recorder.put("old", {"answer": "buy"})
    recorder.put("recent", {"answer": "hold"})
    os.utime(cache / "old.json", (OLD.timestamp(), OLD.timestamp()))
    os.utime(cache / "recent.json", (RECENT.timestamp(), RECENT.timestamp()))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(ledger_url) as ledger:
        ledger.append_many(_ledger_events())

    result = _run_retention(instance, tmp_path, ledger_url, cache)

    assert result.success
    counts = result.output_for_node("apply_retention")
    runs = {r.run_id for r in instance.get_runs()}
    assert a_old not in runs and plain_old not in runs and failed_old not in runs
    assert {a_latest, b_only, plain_recent, failed_last, in_progress, result.run_id} <= runs
    assert counts["runs_deleted"] == 3 and counts["run_events_deleted"] > 3 * 5 and counts["old_runs_kept"] == 3
    # The asset status the UI reads is intact: every partition's latest materialization survives.
    assert instance.get_materialized_partitions(part_asset.key) == {"a", "b"}
    latest = instance.get_latest_materialization_event(part_asset.key)
    assert latest is not None and latest.run_id in {a_latest, b_only}
    assert [r.run_id for r in instance.fetch_materializations(plain_asset.key, limit=10).records] == [plain_recent]
    # Lake: quarantine and reports by the date they are about; undated files untouched.
    left = sorted(str(p.relative_to(lake / "quarantine")) for p in (lake / "quarantine").rglob("part.parquet"))
    assert left == ["timeframe=1m/symbol=AAPL/date=2026-06-09/part.parquet", "timeframe=1m/symbol=AAPL/year=2026/part.parquet"]
    assert not (lake / "quarantine" / "timeframe=1m" / "symbol=AAPL" / "date=2025-12-01").exists()  # empty folder gone
    assert sorted(p.name for p in (lake / "reports" / "eod").iterdir()) == ["2026-06-09.md", "notes.md"]
    assert counts["quarantine_files"] == 2 and counts["report_files"] == 1 and counts["llm_cache_files"] == 1
    # The model cache: a replay of the recent cycle still finds its answer; the old one is a miss.
    replay = ResponseCache(cache, CacheMode.REPLAY)
    assert replay.get("recent") == {"answer": "hold"} and replay.get("old") is None
    # The ledger: the events older than 30 days archived (a prefix), verified; the ledger keeps all.
    with Ledger(ledger_url) as ledger:
        events = list(ledger.events())
    cutoff = NOW - timedelta(days=30)
    old_events = [e for e in events if e.recorded_at < cutoff]
    assert counts["ledger_events_archived"] == len(old_events) == 19 and len(events) == 23
    assert list(restore_events(lake / "archive" / "ledger")) == old_events
    assert verify_archive(lake / "archive" / "ledger") == len(old_events)
    # Run metadata says what went and how many bytes of files were freed.
    [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    meta = output.step_output_data.metadata
    assert meta["runs_deleted"].value == 3 and int(str(meta["bytes_freed"].value)) > 0
    assert "date=2025-12-01" in str(meta["quarantine_sample"].value)

    # A rerun the same day removes nothing more and archives nothing again (idempotent).
    again = _run_retention(instance, tmp_path, ledger_url, cache).output_for_node("apply_retention")
    assert again == {"quarantine_files": 0, "report_files": 0, "llm_cache_files": 0, "ledger_events_archived": 0, "runs_deleted": 0, "run_events_deleted": 0, "old_runs_kept": 3}
    assert len(archived_files(lake / "archive" / "ledger")) == 1


def test_the_archived_ledger_replays_to_the_same_projection(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(ledger_url) as ledger:
        ledger.append_many(_ledger_events())
    later = RECENT + timedelta(days=60)  # every event is older than 30 days: all archived, in two passes
    _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache", now=NOW)
    _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache", now=later)
    folder = tmp_path / "lake" / "archive" / "ledger"
    assert len(archived_files(folder)) == 2 and verify_archive(folder) == 23
    with Ledger(ledger_url) as original, Ledger(f"sqlite:///{tmp_path / 'restored.sqlite'}") as restored:
        assert restored.append_many(restore_events(folder)) == 23
        assert list(restored.events()) == list(original.events())
        assert replay_portfolio(restored) == replay_portfolio(original)
        mine, theirs = project(restored), project(original)
        assert mine.portfolio == theirs.portfolio and mine.portfolio.realized_pnl != 0


def test_retention_compacts_the_archived_ledger_and_the_replay_stays(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    events = _ledger_events()
    with Ledger(ledger_url) as ledger:
        ledger.append_many(events)
    with Ledger(ledger_url) as ledger:
        before = projections.to_json(project(ledger))
    result = _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache", now=NOW)
    assert "ledger_events_compacted" not in result.output_for_node("apply_retention")  # off by default
    monkeypatch.setenv("QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS", "60")
    later = NOW + timedelta(days=60)  # the first archive file (events before 2026-05-11) is now older than 60 days
    counts = _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache", now=later).output_for_node("apply_retention")
    folder = tmp_path / "lake" / "archive" / "ledger"
    [(first, last, _), (kept_from, _, _)] = archived_files(folder)
    assert counts["ledger_events_compacted"] == last - first + 1 > 0
    with Ledger(ledger_url) as ledger:
        assert [s for s, _ in ledger.events_with_seq()] == list(range(kept_from, len(events) + 1))
        assert compacted(ledger).up_to_seq == last
    with Ledger(ledger_url) as ledger:  # a new process: the same portfolio, halts and orders
        assert projections.to_json(project(ledger)) == before
    assert [e.event_id for e in restore_events(folder)] == [e.event_id for e in events]


def test_a_long_ledger_is_archived_in_files_of_bounded_size(tmp_path: Path) -> None:
    from trading.ledger.archive import archive_events

    events = _ledger_events()
    folder = tmp_path / "archive"
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        ledger.append_many(events)
        result = archive_events(ledger, folder, NOW, max_events=5)
        again = archive_events(ledger, folder, NOW, max_events=5)
    assert (result.events, result.first_seq, result.last_seq, again.events) == (23, 1, 23, 0)
    assert [(a, b) for a, b, _ in archived_files(folder)] == [(1, 5), (6, 10), (11, 15), (16, 20), (21, 23)]
    assert verify_archive(folder) == 23 and list(restore_events(folder)) == events
    assert result.bytes == sum(p.stat().st_size for _, _, p in archived_files(folder))


def test_a_tampered_archive_fails_verification(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(ledger_url) as ledger:
        ledger.append_many(_ledger_events())
    _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache")
    [(_first, _last, path)] = archived_files(tmp_path / "lake" / "archive" / "ledger")
    table = pq.read_table(path)
    rows = table.to_pylist()
    payload = json.loads(rows[3]["payload"])
    payload["price"] = payload["price"] + 1  # one fill's price changed after the fact
    rows[3]["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)
    with pytest.raises(ArchiveError, match="digest"):
        verify_archive(path.parent)


def test_in_progress_runs_are_never_deleted_however_old(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_RETENTION_RUNS_DAYS", "1")
    with time_machine.travel(OLD, tick=False):
        started = [instance.create_run_for_job(failing_job, status=s).run_id for s in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)]
    result = _run_retention(instance, tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path / "cache")
    assert result.output_for_node("apply_retention")["runs_deleted"] == 0
    assert set(started) <= {r.run_id for r in instance.get_runs()}


def test_a_partitions_last_run_stays_failed_or_not(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """The UI shows a partition failed from its last run: an old failure that is the last run of
    its partition stays; an older one of the same partition goes."""
    def run(when: datetime, partition: str) -> str:
        return _at(when, lambda: failing_partitioned_job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False))

    first_a, last_a, last_b = run(OLD, "a"), run(OLD + timedelta(days=1), "a"), run(OLD + timedelta(days=2), "b")
    counts = _run_retention(instance, tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path / "cache").output_for_node("apply_retention")
    left = {r.run_id for r in instance.get_runs()}
    assert first_a not in left and {last_a, last_b} <= left
    assert (counts["runs_deleted"], counts["old_runs_kept"]) == (1, 2)


def test_policy_from_the_environment() -> None:
    assert retention_policy({}) == RetentionPolicy()
    assert RetentionPolicy() == RetentionPolicy(runs_days=90, quarantine_days=365, reports_days=365, llm_cache_days=90, ledger_archive_days=30)
    assert retention_policy({"QUANTLAKE_RETENTION_RUNS_DAYS": "-1", "QUANTLAKE_RETENTION_REPORTS_DAYS": " 7 "}) == RetentionPolicy(runs_days=-1, reports_days=7)
    for bad in ("0", "-2", "ten", "1.5"):
        with pytest.raises(ValueError, match=f"QUANTLAKE_RETENTION_QUARANTINE_DAYS={bad!r}"):
            retention_policy({"QUANTLAKE_RETENTION_QUARANTINE_DAYS": bad})
    assert RetentionPolicy().ledger_compact_days == -1  # compaction is opt-in
    assert retention_policy({"QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS": "30"}).ledger_compact_days == 30
    for env in ({"QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS": "10"}, {"QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS": "90", "QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS": "-1"}):
        with pytest.raises(ValueError, match="QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS=.*removes archived events only"):
            retention_policy(env)


def test_keep_forever_removes_nothing(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RUNS", "QUARANTINE", "REPORTS", "LLM_CACHE", "LEDGER_ARCHIVE"):
        monkeypatch.setenv(f"QUANTLAKE_RETENTION_{var}_DAYS", "-1")
    old = _materialize(instance, OLD, plain_asset)
    _materialize(instance, OLD, plain_asset)
    _lake_files(tmp_path / "lake")
    result = _run_retention(instance, tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path / "cache")
    assert result.output_for_node("apply_retention") == {}
    assert old in {r.run_id for r in instance.get_runs()}
    assert len(list((tmp_path / "lake" / "quarantine").rglob("part.parquet"))) == 4


class _Steps(TypedDict, total=False):
    steps: Annotated[list[str], operator.add]


def _two_step_graph(checkpointer: Any) -> Any:
    graph = StateGraph(_Steps)
    graph.add_node("first", lambda _: {"steps": ["first"]})
    graph.add_node("second", lambda _: {"steps": ["second"]})
    graph.add_edge(START, "first")
    graph.add_edge("first", "second")
    graph.add_edge("second", END)
    return graph.compile(checkpointer=checkpointer, interrupt_before=["second"])  # a cycle that stopped mid-graph


def _thread(name: str) -> Any:
    return {"configurable": {"thread_id": name}}


def test_old_graph_threads_leave_the_checkpoint_file_and_recent_ones_resume(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    path = tmp_path / "ledger.graph.sqlite"  # the decide runs' default file beside this ledger
    with open_checkpointer(str(path)) as saver:
        graph = _two_step_graph(saver)
        for name, when in (("old-cycle", NOW - timedelta(days=8)), ("recent-cycle", NOW - timedelta(days=6))):
            with time_machine.travel(when, tick=False):
                graph.invoke({"steps": []}, _thread(name))

    monkeypatch.setenv("QUANTLAKE_RETENTION_CHECKPOINT_DAYS", "-1")
    assert "checkpoint_threads_deleted" not in _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache").output_for_node("apply_retention")
    monkeypatch.delenv("QUANTLAKE_RETENTION_CHECKPOINT_DAYS")  # the default: 7 days
    counts = _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache").output_for_node("apply_retention")
    assert counts["checkpoint_threads_deleted"] == 1 and counts["checkpoints_deleted"] >= 2

    with open_checkpointer(str(path)) as opened:
        saver = cast(SqliteSaver, opened)
        assert saver.get_tuple(_thread("old-cycle")) is None
        graph = _two_step_graph(saver)
        assert graph.invoke(None, _thread("recent-cycle"))["steps"] == ["first", "second"]  # resumes after the first node
        assert {c.config["configurable"]["thread_id"] for c in saver.list(None)} == {"recent-cycle"}
        assert not saver.conn.execute("SELECT 1 FROM writes WHERE thread_id = 'old-cycle'").fetchall()
    again = _run_retention(instance, tmp_path, ledger_url, tmp_path / "cache").output_for_node("apply_retention")
    assert again["checkpoint_threads_deleted"] == 0  # idempotent


def _threads(path: Path) -> set[str]:
    with open_checkpointer(str(path)) as opened:
        return {c.config["configurable"]["thread_id"] for c in cast(SqliteSaver, opened).list(None)}


def test_the_pipeline_files_own_checkpoint_file_is_pruned_too(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    default, own = tmp_path / "ledger.graph.sqlite", tmp_path / "graphs" / "own.sqlite"
    for path in (default, own):
        with open_checkpointer(str(path)) as saver:
            graph = _two_step_graph(saver)
            for name, when in (("old-cycle", NOW - timedelta(days=8)), ("recent-cycle", NOW - timedelta(days=6))):
                with time_machine.travel(when, tick=False):
                    graph.invoke({"steps": []}, _thread(name))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"checkpoint: sqlite:///{own}\n")  # the URL form; a bare path names the same file
    trading = TradingResource(mode="simulation", ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", pipeline_file=str(pipeline))
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "trading": trading}
    with time_machine.travel(NOW, tick=False):
        result = defs.resolve_job_def("retention_job").execute_in_process(instance=instance, resources=resources, tags={NOW_TAG: NOW.isoformat()})
    assert _threads(own) == {"recent-cycle"} and _threads(default) == {"recent-cycle"}
    assert result.output_for_node("apply_retention")["checkpoint_threads_deleted"] == 2  # one in each file
    [materialization] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["pipeline_checkpoint_file"].value == str(own) and metadata["checkpoint_file"].value == str(default)


def test_the_weekly_schedule_fires_on_sundays_out_of_session() -> None:
    schedule = defs.resolve_schedule_def("retention_schedule")
    assert schedule.job_name == "retention_job" and schedule.execution_timezone == "America/New_York"
    assert isinstance(schedule.cron_schedule, str)
    ticks = cron_string_iterator(datetime(2026, 11, 23, tzinfo=UTC).timestamp(), schedule.cron_schedule, "America/New_York")
    first, second = next(ticks), next(ticks)
    assert (first.isoformat(), second - first) == ("2026-11-29T03:00:00-05:00", timedelta(days=7))
