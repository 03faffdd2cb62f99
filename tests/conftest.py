"""Shared fixtures: an isolated lake and Dagster home per test, and the PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

PG_URL = os.environ.get("QUANTLAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


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
