"""Shared fixtures: an isolated lake and Dagster home per test, and the PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The fixtures' sessions go back to 2024; the default start (where the demo's data starts, as of
# loading) moves with the clock. tests/orchestration/test_partitions.py loads the default too.
os.environ.setdefault("QUANTLAKE_PARTITION_START", "2022-01-03")

PG_URL = os.environ.get("QUANTLAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Property tests draw new examples on every run by default (exploration, on a developer's machine). In
# CI and in mutation runs they draw the same examples every time: a verdict must not depend on the day
# (a CI green today and red next week) nor a mutant's fate on a lucky draw (issue 18).
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") or os.environ.get("QUANTLAKE_MUTATION_RUN"):
    hypothesis_settings.load_profile("deterministic")


@pytest.fixture
def lake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lake"
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(root))
    return root


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the local server, dropped afterwards; skips if no server."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as exc:  # the reason is printed by the skip
        engine.dispose()
        if os.environ.get("CI"):
            raise AssertionError(f"PostgreSQL at {PG_URL} is required in CI but unreachable: {exc}") from exc
        pytest.skip(f"PostgreSQL at {PG_URL} unreachable: {exc}")
    schema = f"ql_test_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'create schema "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'drop schema "{schema}" cascade'))
        engine.dispose()


# Frozen clocks: `QUANTLAKE_FROZEN_NOW=2026-12-25T15:00:00+00:00 pytest -m date_sensitive` runs the
# session with every wall-clock read (datetime.now, date.today, time.time) starting from that
# instant and ticking on from there. scripts/test.sh reruns the date-sensitive tests on a weekend,
# an exchange holiday, a half day, a DST switch day and two years ahead.
FROZEN_NOW = os.environ.get("QUANTLAKE_FROZEN_NOW")


_TRAVEL: list[object] = []


def pytest_configure(config: pytest.Config) -> None:
    # Before collection, not in a fixture: modules that read the date at import (the partition
    # lists) must see the frozen day too.
    if FROZEN_NOW and not _TRAVEL:
        import time_machine

        travel = time_machine.travel(FROZEN_NOW, tick=True)
        travel.start()
        _TRAVEL.append(travel)
    # Before any test module imports an asset module: importing orchestration passes the settings down.
    import orchestration  # noqa: F401


def pytest_unconfigure(config: pytest.Config) -> None:
    while _TRAVEL:
        _TRAVEL.pop().stop()  # type: ignore[attr-defined]


def pytest_report_header() -> str | None:
    return f"clock frozen at {FROZEN_NOW} (ticking)" if FROZEN_NOW else None


# What reads the clock or the calendar near today: the trading wing, and the orchestration that
# schedules, partitions, ingests and decides. Research and deployment configs are not rerun.
DATE_SENSITIVE = (
    "tests/trading/",
    "tests/orchestration/test_schedules.py",
    "tests/orchestration/test_trading_orchestration.py",
    "tests/orchestration/test_trading_assets.py",
    "tests/orchestration/test_cli.py",
    "tests/orchestration/test_ingest_assets.py",
    "tests/orchestration/test_definitions.py",
    "tests/orchestration/test_alerts.py",
    "tests/orchestration/test_metrics.py",
    "tests/lake/test_synthetic.py",
)


# Trading files (or single tests) that read no clock from project code, the calendar or Dagster's partition
# and schedule code, but for the audit stamp `Event.recorded_at` (measured with a spy on every
# clock read under a frozen clock (tests/clockspy.py), 2026-11-29 and again 2026-11-30 over the whole set): pure sizing,
# limits, ledgers and replays over fixed bars.
CLOCK_FREE = (
    "tests/trading/test_paper_parity.py",
    "tests/trading/test_risk.py",
    "tests/trading/test_sanity.py",
    "tests/trading/test_projections.py",
    "tests/trading/test_ledger.py",
    "tests/trading/test_pipeline.py",
    "tests/trading/test_simulated_broker.py",
    "tests/trading/test_analytics.py",
    # Its rules run in fresh interpreters, where the frozen clock does not reach: a rerun repeats the same run.
    "tests/trading/test_one_rule_controls.py",
    # The spy again on 2026-12-02 (frozen at 2026-12-05T15:00Z, every date-sensitive test): no read, and
    # the most time of those that read none: paper sessions over fixed bars, ledger compaction and archives.
    "tests/trading/test_fill_caps.py",
    "tests/trading/test_ledger_compaction.py",
    "tests/trading/test_ledger_archive_s3.py",
    # Single tests (node ids, parameters aside) in files whose other tests read the clock.
    "tests/trading/test_limits_parity.py::test_where_a_session_control_binds_the_session_is_the_backtest_with_the_same_limits",
    "tests/trading/test_reflection.py::test_a_closed_position_leaves_a_reflection_the_next_decision_on_the_symbol_reads",
    "tests/trading/test_execution.py::test_ledger_replay_equals_the_broker_after_a_long_random_session",
    "tests/trading/test_graph.py::test_a_killed_cycle_resumes_where_it_stopped_and_never_asks_a_model_twice",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        where = Path(str(item.path)).relative_to(root).as_posix()
        test = f"{where}::{item.name.split('[')[0]}"
        if where.startswith(DATE_SENSITIVE) and where not in CLOCK_FREE and test not in CLOCK_FREE:
            item.add_marker(pytest.mark.date_sensitive)
