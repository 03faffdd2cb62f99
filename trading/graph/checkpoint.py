"""Where graph threads are checkpointed: SQLite by default, PostgreSQL when configured.

- None: a private in-memory SQLite for one cycle (nothing survives the process; same as before graphs).
- a path (or `sqlite:///path`): a SQLite file; a cycle that died resumes from it.
- `postgresql://...` (or SQLAlchemy's `postgresql+psycopg2://...`, the ledger's form): LangGraph's
  PostgresSaver (`langgraph-checkpoint-postgres`), its tables in the URL's database and search_path.
Any other `scheme://` is refused at load: it would otherwise become a strange local folder.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Checkpointer


class CheckpointConfigError(ValueError):
    pass


_POSTGRES = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")


def postgres_dsn(where: str | None) -> str | None:
    """The libpq URL of a PostgreSQL checkpoint (a SQLAlchemy driver suffix dropped); None for SQLite or memory."""
    return _POSTGRES.sub("postgresql://", where, count=1) if where and _POSTGRES.match(where) else None


def check_checkpoint(where: str | None) -> None:
    """At load: a PostgreSQL checkpoint needs its package, any other URL is not a place (a clear error now, not mid-cycle)."""
    if postgres_dsn(where) is not None:
        try:
            import langgraph.checkpoint.postgres  # noqa: F401
        except ImportError:
            raise CheckpointConfigError(
                f"checkpoint {str(where).split('@')[-1]!r}: PostgreSQL checkpoints need the langgraph-checkpoint-postgres package, which is not installed"
            ) from None
    elif where and "://" in where and not where.startswith("sqlite:///"):
        raise CheckpointConfigError(f"checkpoint {where.split('@')[-1]!r}: expected a SQLite file (a path or sqlite:///path), a postgresql:// URL or 'memory'")


@contextmanager
def open_checkpointer(where: str | None) -> Iterator[Checkpointer]:
    check_checkpoint(where)
    if dsn := postgres_dsn(where):
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(dsn) as saver:
            saver.setup()
            yield saver
        return
    if where:
        path = Path(where.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        target = str(path)
    else:
        target = ":memory:"
    # check_same_thread=False: the cycle's threads share it; SqliteSaver serializes access with its lock.
    conn = sqlite3.connect(target, check_same_thread=False)
    if where:
        # WAL with NORMAL sync: a dead process loses no committed checkpoint (only a power cut might
        # lose the last few), at a fraction of a full fsync per node.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        sqlite_saver = SqliteSaver(conn)  # its own name: mypy typed `saver` as the PostgresSaver above
        sqlite_saver.setup()
        yield sqlite_saver
    finally:
        conn.close()
