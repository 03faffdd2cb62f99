"""tests/soak/lean.py: Dagster's SQLite storage does its per-call set-up once, and records all it did."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from alembic.script import ScriptDirectory
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.sql import get_alembic_config
from sqlalchemy.pool import NullPool

from tests.soak.lean import ENGINES_KEPT, lean_dagster


@dg.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@dg.asset_check(asset=numbers)
def numbers_positive(numbers: list[int]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=all(n > 0 for n in numbers))


def _runs(home: Path) -> list[tuple[str, int, list[str]]]:
    """(status, events, event types) of two materializations on a fresh SQLite instance at `home`."""
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for _ in range(2):
            dg.materialize([numbers, numbers_positive], instance=instance)
        runs = list(reversed(instance.get_runs()))  # oldest first
        return [(r.status.value, len(logs := instance.all_logs(r.run_id)), sorted(str(e.dagster_event_type) for e in logs)) for r in runs]


def test_engines_and_migration_scripts_are_built_once_inside_and_afresh_outside(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    config = get_alembic_config(sqlite_event_log.__file__)
    assert sqlite_event_log.create_engine(url, poolclass=NullPool) is not sqlite_event_log.create_engine(url, poolclass=NullPool)
    assert ScriptDirectory.from_config(config) is not ScriptDirectory.from_config(config)
    with lean_dagster():
        first = sqlite_event_log.create_engine(url, poolclass=NullPool)
        assert sqlite_event_log.create_engine(url, poolclass=NullPool) is first
        assert sqlite_event_log.create_engine(url, poolclass=NullPool, echo=True) is not first  # an option it does not key on
        others = [sqlite_event_log.create_engine(f"sqlite:///{tmp_path / f'{i}.db'}", poolclass=NullPool) for i in range(ENGINES_KEPT)]
        assert sqlite_event_log.create_engine(url, poolclass=NullPool) is not first  # the oldest went, bounded
        assert sqlite_event_log.create_engine(f"sqlite:///{tmp_path / f'{ENGINES_KEPT - 1}.db'}", poolclass=NullPool) is others[-1]
        assert ScriptDirectory.from_config(config) is ScriptDirectory.from_config(config)
        pooled = sqlite_event_log.create_engine(f"sqlite:///{tmp_path / 'pooled.db'}", poolclass=NullPool)
        connections = []
        for _ in range(2):
            with pooled.connect() as conn:
                connections.append(conn.connection.dbapi_connection)
            pooled.dispose()  # what the event log storage does after each call
        assert connections[0] is connections[1]  # kept open between calls


def test_the_instance_records_the_same_runs_and_events(tmp_path: Path) -> None:
    plain = _runs(tmp_path / "plain")
    with lean_dagster():
        lean = _runs(tmp_path / "lean")
    assert lean == plain and [status for status, _, _ in lean] == ["SUCCESS", "SUCCESS"]
    assert all("DagsterEventType.ASSET_CHECK_EVALUATION" in types for _, _, types in lean)


def _schema(db: Path) -> tuple[list[tuple[str, str]], list[str], str]:
    """(tables and indexes with their SQL, alembic revisions, journal mode) of a SQLite file."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        objects = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall()
        revisions = [r for (r,) in conn.execute("SELECT version_num FROM alembic_version")]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return objects, revisions, mode


def test_a_new_run_shard_is_the_one_dagster_makes(tmp_path: Path) -> None:
    from unittest import mock

    _runs(tmp_path / "plain")
    real = sqlite_event_log.SqliteEventLogStorage._initdb
    with mock.patch.object(sqlite_event_log.SqliteEventLogStorage, "_initdb", autospec=True, side_effect=real) as spied:
        with lean_dagster():
            _runs(tmp_path / "lean")
    shards = {name: sorted((tmp_path / name / "history" / "runs").glob("*-*.db")) for name in ("plain", "lean")}
    assert len(shards["plain"]) == len(shards["lean"]) == 2
    plain = _schema(shards["plain"][0])
    assert plain[1] and plain[2] == "wal"
    assert all(_schema(shard) == plain for shard in shards["lean"])
    # Dagster's initialization ran for the index and the template only: each run's shard is a copy.
    assert spied.call_count == 2


class _Storage:
    def __init__(self, database: str) -> None:
        self._conn_string = database


def test_a_schema_yes_is_kept_per_database_and_a_no_asked_again() -> None:
    from tests.soak.lean import _yes_kept

    tables = {"runs"}
    asked: list[tuple[str, str]] = []

    def has_table(storage: _Storage, name: str) -> bool:
        asked.append((storage._conn_string, name))
        return name in tables

    ask = _yes_kept(has_table, "has_table", set())
    a, b = _Storage("sqlite:///a.db"), _Storage("sqlite:///b.db")
    assert [ask(a, "runs"), ask(_Storage("sqlite:///a.db"), "runs")] == [True, True]  # a new object, the same database
    assert [ask(a, "jobs"), ask(a, "jobs")] == [False, False]
    tables.add("jobs")  # a migration added it
    assert [ask(a, "jobs"), ask(a, "jobs"), ask(b, "runs")] == [True, True, True]
    assert asked == [("sqlite:///a.db", "runs"), ("sqlite:///a.db", "jobs"), ("sqlite:///a.db", "jobs"), ("sqlite:///a.db", "jobs"), ("sqlite:///b.db", "runs")]


def test_a_database_at_the_head_revision_is_not_asked_again(tmp_path: Path) -> None:
    from tests.soak.lean import _head_kept

    revisions = {"a": ("7", "9"), "b": ("9", "9")}
    asked: list[str] = []

    def check(config: object, conn: object) -> tuple[str, str]:
        name = str(conn.engine.url).rsplit("/", 1)[-1].removesuffix(".db")  # type: ignore[attr-defined]
        asked.append(name)
        return revisions[name]

    import sqlalchemy

    check_kept = _head_kept(check)  # type: ignore[arg-type]
    config = get_alembic_config(sqlite_event_log.__file__)
    conns = {n: sqlalchemy.create_engine(f"sqlite:///{tmp_path / n}.db").connect() for n in revisions}
    try:
        assert [check_kept(config, conns["a"]) for _ in range(2)] == [("7", "9")] * 2  # behind: asked each time
        assert [check_kept(config, conns["b"]) for _ in range(2)] == [("9", "9")] * 2
    finally:
        for conn in conns.values():
            conn.close()
    assert asked == ["a", "a", "b"]


letters = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=letters, check_specs=[dg.AssetCheckSpec("first", asset="letter"), dg.AssetCheckSpec("second", asset="letter")])
def letter() -> dg.MaterializeResult:
    passed = dg.AssetExecutionContext.get().partition_key == "a"
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name=n, passed=passed) for n in ("first", "second")])


def _check_targets(home: Path) -> list[tuple[str, str, bool]]:
    """Per check evaluation: the run it ran in, the run of the materialization it targets, passed."""
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in ("a", "b", "a"):
            dg.materialize([letter], instance=instance, partition_key=key)
        out = []
        for run in reversed(instance.get_runs()):
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
                evaluation = entry.dagster_event.event_specific_data  # type: ignore[union-attr]
                out.append((run.run_id, evaluation.target_materialization_data.run_id, evaluation.passed))  # type: ignore[union-attr]
        return out


def test_each_check_targets_its_own_steps_materialization(tmp_path: Path) -> None:
    plain = _check_targets(tmp_path / "plain")
    with lean_dagster():
        lean = _check_targets(tmp_path / "lean")
    assert [passed for _, _, passed in lean] == [passed for _, _, passed in plain] == [True, True, False, False, True, True]
    assert all(run == target for run, target, _ in lean + plain)  # the materialization of its own run, never a cached earlier one


def _pg_runs(home: Path, url: str) -> tuple[list[tuple[str, int, list[str]]], int]:
    """Two materializations on a PostgreSQL instance at `url`: (status, events, event types) of each, and
    how many server connections the storages opened for them."""
    from unittest import mock

    import psycopg2

    home.mkdir()
    (home / "dagster.yaml").write_text(f'storage:\n  postgres:\n    postgres_url: "{url}"\n')
    with mock.patch.object(psycopg2, "connect", wraps=psycopg2.connect) as connect:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            before = {r.run_id for r in instance.get_runs()}
            for _ in range(2):
                dg.materialize([numbers, numbers_positive], instance=instance)
            runs = [r for r in reversed(instance.get_runs()) if r.run_id not in before]
            recorded = [(r.status.value, len(logs := instance.all_logs(r.run_id)), sorted(str(e.dagster_event_type) for e in logs)) for r in runs]
        return recorded, connect.call_count


@pytest.mark.postgres
def test_a_postgresql_instance_reuses_its_connections_and_records_the_same(tmp_path: Path, pg_schema_url: str) -> None:
    plain, plain_connections = _pg_runs(tmp_path / "plain", pg_schema_url)
    with lean_dagster():
        lean, lean_connections = _pg_runs(tmp_path / "lean", pg_schema_url)
    assert lean == plain and [status for status, _, _ in lean] == ["SUCCESS", "SUCCESS"]
    # dagster-postgres opens a connection per storage call (NullPool); inside, a pool's few are reused.
    assert plain_connections > 50 and lean_connections <= 15, (plain_connections, lean_connections)
