"""Where graph threads are checkpointed: SQLite by default, PostgreSQL when configured.

- None: a private in-memory SQLite for one cycle (nothing survives the process; same as before graphs).
- a path (or `sqlite:///path`): a SQLite file; a cycle that died resumes from it.
- `postgresql://...`: LangGraph's PostgresSaver, when `langgraph-checkpoint-postgres` is installed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Checkpointer


class CheckpointConfigError(ValueError):
    pass


def check_checkpoint(where: str | None) -> None:
    """At load: a PostgreSQL checkpoint needs its package (a clear error now, not mid-cycle)."""
    if where and where.startswith(("postgresql://", "postgres://")):
        try:
            import langgraph.checkpoint.postgres  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise CheckpointConfigError(
                f"checkpoint {where.split('@')[-1]!r}: PostgreSQL checkpoints need the langgraph-checkpoint-postgres package, which is not installed"
            ) from None


@contextmanager
def open_checkpointer(where: str | None) -> Iterator[Checkpointer]:
    if where and where.startswith(("postgresql://", "postgres://")):
        check_checkpoint(where)
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(where) as saver:
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
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()
