"""A PostgreSQL ledger keeps the decide runs' graph checkpoints in its own database when the pipeline file
names no `checkpoint:` (not a SQLite file in the Dagster instance's storage), and retention prunes
PostgreSQL checkpoints by the SQLite rule: a thread whose newest checkpoint is older than the horizon goes.

Needs the server at QUANTLAKE_TEST_PG_URL (default 127.0.0.1:5432, database `test`): skipped without it,
failed without it under CI (tests/conftest.py `pg_schema_url`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy
import time_machine

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from tests.fakes.openai_server import OpenAIServer
from tests.orchestration.test_decide_checkpoint import ARMED, NOW, SYMBOLS, _proposals, _setup
from tests.orchestration.test_retention import _thread, _two_step_graph
from tests.trading.conftest import good_answers
from trading.graph.checkpoint import open_checkpointer
from trading.retention import prune_postgres_checkpoints


def _threads(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return {str(t) for t in conn.execute(sqlalchemy.text("select distinct thread_id from checkpoints")).scalars()}
    finally:
        engine.dispose()


def _instance(tmp_path: Path) -> Any:
    (tmp_path / "home").mkdir(exist_ok=True)
    return dg.instance_for_test(temp_dir=str(tmp_path / "home"))


def _decide(lake: LakeResource, trading: TradingResource, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    config = {"ops": {"decision_cycle": {"config": {"strategy": "tests.trading.always_long:ALWAYS_LONG", "symbols": SYMBOLS}}}}
    return defs.resolve_job_def("decide_job").execute_in_process(
        run_config=config, instance=instance, resources={"lake": lake, "trading": trading}, tags={NOW_TAG: NOW.isoformat()}, raise_on_error=False
    )


def test_a_postgres_ledger_checkpoints_in_its_own_database_and_a_killed_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_schema_url: str) -> None:
    """No `checkpoint:` in the pipeline file; the ledger on PostgreSQL (SQLAlchemy's driver form, as
    QUANTLAKE_LEDGER_URL is often written)."""
    ledger_url = pg_schema_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    with OpenAIServer(responder=good_answers) as server, _instance(tmp_path) as instance:
        lake, sqlite_ledger = _setup(tmp_path, server, monkeypatch, checkpoint=None)
        trading = TradingResource(ledger_url=ledger_url, pipeline_file=sqlite_ledger.pipeline_file)
        ARMED["on"] = True
        try:
            assert not _decide(lake, trading, instance).success
        finally:
            ARMED["on"] = False
        assert _proposals(server) == len(SYMBOLS), "the analyst answered for each symbol before the kill"
        assert len(_threads(pg_schema_url)) == len(SYMBOLS), "a thread a symbol, in the ledger's database and schema"
        assert not list(Path(instance.storage_directory()).glob("graph_checkpoints.sqlite*")), "nothing in the instance's storage"
        assert not (tmp_path / "ledger.graph.sqlite").exists()
        rerun = _decide(lake, trading, instance)
        assert rerun.success
        assert _proposals(server) == len(SYMBOLS), "the rerun resumed from the ledger's database: the analyst was not asked again"


def _old_and_recent_threads(url: str) -> None:
    with open_checkpointer(url) as saver:
        graph = _two_step_graph(saver)
        for name, when in (("old-cycle", NOW - timedelta(days=8)), ("recent-cycle", NOW - timedelta(days=6))):
            with time_machine.travel(when, tick=False):
                graph.invoke({"steps": []}, _thread(name))


@pytest.mark.parametrize("named_by", ["the ledger", "the pipeline file"])
def test_retention_prunes_old_threads_from_postgres(tmp_path: Path, pg_schema_url: str, named_by: str) -> None:
    """The default checkpoint of a PostgreSQL ledger, or a pipeline file's own `checkpoint: postgresql://...`
    beside a SQLite ledger: the 8-day-old thread goes (7 days by default), the 6-day-old one still resumes."""
    from orchestration.definitions import defs

    _old_and_recent_threads(pg_schema_url)
    kwargs: dict[str, Any] = {"mode": "simulation", "ledger_url": pg_schema_url}
    if named_by == "the pipeline file":
        (tmp_path / "pipeline.yaml").write_text(f"checkpoint: {pg_schema_url}\n")
        kwargs |= {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite'}", "pipeline_file": str(tmp_path / "pipeline.yaml")}
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "trading": TradingResource(**kwargs)}
    with _instance(tmp_path) as instance, time_machine.travel(NOW, tick=False):
        result = defs.resolve_job_def("retention_job").execute_in_process(instance=instance, resources=resources, tags={NOW_TAG: NOW.isoformat()})
        again = defs.resolve_job_def("retention_job").execute_in_process(instance=instance, resources=resources, tags={NOW_TAG: NOW.isoformat()})
    counts = result.output_for_node("apply_retention")
    assert counts["checkpoint_threads_deleted"] == 1 and counts["checkpoints_deleted"] >= 2
    assert again.output_for_node("apply_retention")["checkpoint_threads_deleted"] == 0, "idempotent"
    assert _threads(pg_schema_url) == {"recent-cycle"}
    with open_checkpointer(pg_schema_url) as saver:
        assert _two_step_graph(saver).invoke(None, _thread("recent-cycle"))["steps"] == ["first", "second"]  # resumes after the first node
    engine = sqlalchemy.create_engine(pg_schema_url)
    try:
        with engine.connect() as conn:
            for table in ("checkpoint_blobs", "checkpoint_writes"):
                assert not conn.execute(sqlalchemy.text(f"select 1 from {table} where thread_id = 'old-cycle'")).fetchall(), table
    finally:
        engine.dispose()


def test_a_database_no_run_checkpointed_in_is_left_alone(pg_schema_url: str) -> None:
    """Retention creates no LangGraph table in a PostgreSQL ledger that never checkpointed."""
    removed = prune_postgres_checkpoints(pg_schema_url, NOW, 7)
    assert (removed.threads, removed.kept) == (0, 0)
    engine = sqlalchemy.create_engine(pg_schema_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select to_regclass('checkpoints')")).scalar_one() is None
    finally:
        engine.dispose()


def test_prune_postgres_refuses_a_naive_now_or_a_zero_horizon(pg_schema_url: str) -> None:
    with pytest.raises(ValueError, match="timezone-naive"):
        prune_postgres_checkpoints(pg_schema_url, datetime(2024, 1, 1), 7)
    with pytest.raises(ValueError, match="at least 1 day"):
        prune_postgres_checkpoints(pg_schema_url, NOW, 0)
