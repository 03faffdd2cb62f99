"""A leaner per-run path for the soak: Dagster's own storage work (SQLite, PostgreSQL), done once instead of per call.

The soak's time went to Dagster's bookkeeping, not to our runs (profiled on a week): every storage
call built a new SQLAlchemy engine and SQLite connection, so every statement was compiled again (each engine has its own
compiled cache), and every instance the sensors and schedules open (one per evaluation, from the
instance's ref, as the daemon's code server does) read the alembic migration scripts from disk to
learn the head revision. Here, inside the soak only:

- one engine per SQLite file, reused (the latest ENGINES_KEPT), its compiled statements kept, and
  its connections pooled instead of opened and closed for every call (the same statements, each
  call still its own transaction); likewise one engine per PostgreSQL database and isolation level,
  its server connections reused (dagster-postgres opens one per call: a new backend process each);
- the alembic script directory read once per script location (the files do not change in a run);
- a run's new event-log shard copied from an empty one made once (the same tables, WAL mode and
  alembic stamp that Dagster's `_initdb` writes into each), and a shard this process already
  initialized not checked again by every new storage object (each sensor and schedule evaluation
  opens an instance, whose storage checks each file's alembic revision on first use);
- Dagster's questions about its own schema (is this table, column or finished index migration
  there?), asked before most statements by reflecting the schema (7 % of a month's CPU): a yes is
  kept per database, as it stays true for the database's life (Dagster's migrations only add); a no
  is asked again every time; likewise a database found at alembic's head revision is not asked
  its revision again by every new storage object;
- the materialization an asset check result targets, looked up once per step and partition instead
  of once per check (Dagster queries the event log for the partition's latest materialization for
  each of a step's checks: the bars assets have eleven).

Nothing is skipped: every run, event, tick, cursor and run key is still written to the instance.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import sqlalchemy
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool, QueuePool

# The SQLite storages that build an engine per connection (they import create_engine by name).
SQLITE_STORAGE_MODULES = (
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log",
)

# dagster-postgres' storages build their engines through `create_pg_engine`, which calls this module's
# `create_engine` (NullPool, AUTOCOMMIT: a new server connection, i.e. a forked PostgreSQL backend, for
# every call; ~120 connections a run, ~20 ms each on a busy machine here).
POSTGRES_ENGINE_MODULE = "dagster_postgres.utils"

# The run, schedule and index databases, and the latest runs' event-log shards (one file per run):
# a year makes ~2,300 shards, whose engines need not all stay in memory.
ENGINES_KEPT = 64


def _engine_cache(real: Callable[..., Engine], keep: int = ENGINES_KEPT) -> Callable[..., Engine]:
    engines: OrderedDict[tuple[str, str, str, str], Engine] = OrderedDict()

    def create_engine(url: Any, **kwargs: Any) -> Engine:
        if kwargs.keys() - {"poolclass", "connect_args", "isolation_level"}:
            return real(url, **kwargs)  # an option this cache does not key on: no reuse
        key = (str(url), repr(kwargs.get("poolclass")), repr(sorted(kwargs.get("connect_args", {}).items())), repr(kwargs.get("isolation_level")))
        if key in engines:
            engines.move_to_end(key)
            return engines[key]
        if kwargs.get("poolclass") is NullPool:
            # Connections kept open between calls (SQLAlchemy's default pool for a SQLite file; for
            # PostgreSQL, its server connections reused); the storage's own dispose() after each call
            # would close them: it keeps the pool instead. Each call is still its own transaction
            # (AUTOCOMMIT as asked; a pooled connection is rolled back when returned).
            engine = real(url, **{**kwargs, "poolclass": QueuePool})
            setattr(engine, "dispose", lambda close=True: None)  # noqa: B010  (an instance's method, shadowed)
        else:
            engine = real(url, **kwargs)
        engines[key] = engine
        while len(engines) > keep:
            Engine.dispose(engines.popitem(last=False)[1])  # the real dispose: its connections closed
        return engine

    return create_engine


def _script_directory_cache(real: Callable[[Config], ScriptDirectory]) -> Callable[[Config], ScriptDirectory]:
    scripts: dict[str, ScriptDirectory] = {}

    def from_config(config: Config) -> ScriptDirectory:
        location = config.get_main_option("script_location") or ""
        if location not in scripts:
            scripts[location] = real(config)
        return scripts[location]

    return from_config


def _initdb_once(real: Callable[..., None], template_dir: str) -> Callable[..., None]:
    """SqliteEventLogStorage._initdb that initializes a file once per process, and a run's shard by copy."""
    initialized: set[str] = set()
    template = os.path.join(template_dir, "empty_shard.db")

    def initdb(storage: Any, engine: Engine, for_index_shard: bool = False) -> None:
        path = str(engine.url.database)
        if path in initialized and os.path.exists(path):
            return
        if not for_index_shard and not os.path.exists(path):  # a new run's shard
            if not os.path.exists(template):
                blank = sqlalchemy.create_engine(f"sqlite:///{template}", poolclass=NullPool)
                real(storage, blank)  # Dagster's own initialization, into the template
                Engine.dispose(blank)  # its last connection closed: the WAL is checkpointed into the file
            shutil.copyfile(template, path)
        else:
            real(storage, engine, for_index_shard=for_index_shard)
        initialized.add(path)

    return initdb


# (class, its schema questions): each takes the storage, then table, column or migration names, or a
# connection (not part of the question).
SCHEMA_QUESTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "dagster._core.storage.schedules.sql_schedule_storage",
        "SqlScheduleStorage",
        ("has_instigators_table", "_has_instigators_table", "_has_asset_daemon_asset_evaluations_table", "has_secondary_index_table", "has_built_index"),
    ),
    (
        "dagster._core.storage.runs.sql_run_storage",
        "SqlRunStorage",
        ("has_built_index", "has_run_stats_index_cols", "has_bulk_actions_selector_cols", "has_backfill_id_column", "has_bulk_action_job_name_column", "has_backfill_tags_table"),
    ),
    ("dagster._core.storage.event_log.sql_event_log", "SqlEventLogStorage", ("has_table", "has_asset_key_col", "_has_asset_key_col_on_connection", "has_secondary_index")),
    ("dagster._core.storage.event_log.sqlite.sqlite_event_log", "SqliteEventLogStorage", ("has_table",)),
    ("dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log", "ConsolidatedSqliteEventLogStorage", ("has_table", "has_secondary_index")),
)


def _database(storage: Any) -> str | None:
    """The database a storage object works on (a new object per instance, the same file or URL)."""
    for attribute in ("_conn_string", "postgres_url", "mysql_url", "_base_dir"):
        value = getattr(storage, attribute, None)
        if isinstance(value, str):
            return f"{type(storage).__name__}|{value}"
    return None


def _yes_kept(real: Callable[..., bool], method: str, known: set[tuple[object, ...]]) -> Callable[..., bool]:
    def ask(storage: Any, *args: Any) -> bool:
        database = _database(storage)
        names = tuple(a for a in args if isinstance(a, str))  # a connection is not part of the question
        key = (database, method, *names)
        if database is not None and key in known:
            return True
        answer = real(storage, *args)
        if answer and database is not None:
            known.add(key)
        return answer

    return ask


ALEMBIC_CHECKERS = (
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
)


def _head_kept(real: Callable[..., tuple[str | None, str | None]]) -> Callable[..., tuple[str | None, str | None]]:
    """check_alembic_revision(config, conn) that remembers each database found at the head revision."""
    at_head: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    def check(alembic_config: Config, conn: Any) -> tuple[str | None, str | None]:
        key = (str(conn.engine.url), str(alembic_config.get_main_option("script_location")))
        if key in at_head:
            return at_head[key]
        db_revision, head_revision = real(alembic_config, conn)
        if db_revision and db_revision == head_revision:
            at_head[key] = (db_revision, head_revision)
        return db_revision, head_revision

    return check


def _target_once(real: Callable[..., Any]) -> Callable[..., Any]:
    """AssetCheckResult._get_partitioned_target_materialization_data, asked once per run, step
    attempt, asset and partition (a step's checks follow its materialization; nothing comes between)."""
    found: dict[tuple[str, str, int, object, str], Any] = {}

    def target(result: Any, step_context: Any, asset_key: Any, partition_key: str) -> Any:
        key = (step_context.run_id, step_context.step.key, step_context.previous_attempt_count, asset_key, partition_key)
        if key not in found:
            if not any(k[0] == key[0] for k in found):
                found.clear()  # another run: the last one's steps are done
            found[key] = real(result, step_context, asset_key, partition_key)
        return found[key]

    return target


@contextmanager
def lean_dagster() -> Iterator[None]:
    """Reused SQLite and PostgreSQL engines and alembic scripts while inside (see the module's docstring)."""
    import importlib

    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    with ExitStack() as stack:
        cached = _engine_cache(sqlalchemy.create_engine)
        for name in SQLITE_STORAGE_MODULES:
            stack.enter_context(mock.patch.object(importlib.import_module(name), "create_engine", cached))
        try:
            postgres = importlib.import_module(POSTGRES_ENGINE_MODULE)
        except ImportError:  # dagster-postgres not installed: nothing of it to lean
            postgres = None
        if postgres is not None:
            stack.enter_context(mock.patch.object(postgres, "create_engine", _engine_cache(postgres.create_engine)))
        real_from_config = ScriptDirectory.from_config
        stack.enter_context(mock.patch.object(ScriptDirectory, "from_config", _script_directory_cache(real_from_config)))
        template_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="quantlake-soak-shard-"))
        stack.enter_context(mock.patch.object(SqliteEventLogStorage, "_initdb", _initdb_once(SqliteEventLogStorage._initdb, template_dir)))
        from dagster._core.definitions.asset_checks.asset_check_result import AssetCheckResult

        real_target = AssetCheckResult._get_partitioned_target_materialization_data
        stack.enter_context(mock.patch.object(AssetCheckResult, "_get_partitioned_target_materialization_data", _target_once(real_target)))
        head_kept = _head_kept(importlib.import_module(ALEMBIC_CHECKERS[0]).check_alembic_revision)
        for name in ALEMBIC_CHECKERS:
            stack.enter_context(mock.patch.object(importlib.import_module(name), "check_alembic_revision", head_kept))
        known: set[tuple[object, ...]] = set()
        for module, name, methods in SCHEMA_QUESTIONS:
            cls = getattr(importlib.import_module(module), name)
            for method in methods:
                stack.enter_context(mock.patch.object(cls, method, _yes_kept(cls.__dict__[method], method, known)))
        yield
