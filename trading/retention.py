"""Retention below the orchestration: the LLM response cache's old entries, and the graph's old checkpoints
(a SQLite file or a PostgreSQL database: the same rule for both, `prune_checkpoints`).

The cache's entries carry no time of their own, so an entry's age is its file's modification time
(when it was recorded), against the `now` the caller passes. A replay of a cycle younger than the
retention finds every answer it recorded; an older one reports misses (never a model call).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver

from lake.retention import Removed
from trading.graph.checkpoint import postgres_dsn


def expired_cache_entries(folder: Path, now: datetime, days: int) -> list[Path]:
    """The cached answers (`<key>.json`) recorded more than `days` before `now`."""
    if now.tzinfo is None:
        raise ValueError(f"retention now={now} is timezone-naive; pass an aware datetime")
    if days < 1:
        raise ValueError(f"LLM cache retention of {days} days: expected at least 1 day")
    if not folder.is_dir():
        return []
    cutoff = (now - timedelta(days=days)).timestamp()
    return sorted(p for p in folder.glob("*.json") if p.is_file() and p.stat().st_mtime < cutoff)


def prune_llm_cache(folder: Path, now: datetime, days: int) -> Removed:
    """Deletes the cached answers older than `days` (see `expired_cache_entries`)."""
    removed = Removed()
    for path in expired_cache_entries(folder, now, days):
        removed.add(path)
    return removed


@dataclass
class ThreadsRemoved:
    threads: int = 0  # graph threads deleted (all their checkpoints and pending writes)
    checkpoints: int = 0  # checkpoint rows deleted with them
    kept: int = 0  # threads left (a checkpoint within the horizon)


def sqlite_checkpoint_file(where: str | None) -> Path | None:
    """The SQLite file a pipeline's `checkpoint:` names, as trading.graph.checkpoint opens it (a path or
    `sqlite:///path`); None when it names none: unset, `memory`, or a PostgreSQL URL."""
    from trading.pipeline import MEMORY_CHECKPOINT

    if not where or where == MEMORY_CHECKPOINT or postgres_dsn(where) is not None:
        return None
    return Path(where.removeprefix("sqlite:///"))


def checkpoint_store(where: str | None) -> Path | str | None:
    """What a `checkpoint:` (or a decide run's default) names to prune: a SQLite file, a PostgreSQL libpq
    URL, or None (unset, `memory`)."""
    return postgres_dsn(where) or sqlite_checkpoint_file(where)


def prune_checkpoints(store: Path | str, now: datetime, days: int) -> ThreadsRemoved:
    """The threads whose newest checkpoint is older than `days` before `now`, deleted from a SQLite file
    (a Path) or a PostgreSQL database (a libpq URL): one rule, `prune_graph_checkpoints`'."""
    return prune_graph_checkpoints(store, now, days) if isinstance(store, Path) else prune_postgres_checkpoints(store, now, days)


def _check(now: datetime, days: int) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"retention now={now} is timezone-naive; pass an aware datetime")
    if days < 1:
        raise ValueError(f"graph checkpoint retention of {days} days: expected at least 1 day")
    return now - timedelta(days=days)


def prune_postgres_checkpoints(dsn: str, now: datetime, days: int) -> ThreadsRemoved:
    """`prune_graph_checkpoints` on LangGraph's PostgresSaver tables in the URL's database (its search_path):
    a thread whose newest checkpoint (greatest id, a uuid6) was saved before the cutoff goes whole, its
    checkpoints, blobs and writes, in one transaction (the saver's own `prune(..., strategy="delete")`).
    A database where no decide run ever checkpointed is left as it is (no table is created)."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    cutoff = _check(now, days)
    out = ThreadsRemoved()
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('checkpoints')").fetchone() == (None,):
            return out
        saver = PostgresSaver(conn)  # type: ignore[arg-type]  # a plain connection: what from_conn_string opens
        saver.setup()  # tables written by an older LangGraph get the columns it reads
        newest = conn.execute(
            "SELECT DISTINCT ON (thread_id) thread_id, checkpoint->>'ts' FROM checkpoints ORDER BY thread_id, checkpoint_id DESC"
        ).fetchall()
        old = sorted({str(thread) for thread, ts in newest if datetime.fromisoformat(str(ts)) < cutoff})
        out.kept = len(newest) - len(old)
        if old:
            row = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ANY(%s)", (old,)).fetchone()
            saver.prune(old, strategy="delete")
            out.checkpoints, out.threads = int(row[0]) if row else 0, len(old)
    return out


def _newest_ts(saver: SqliteSaver, kind: str | None, blob: bytes) -> datetime:
    checkpoint = saver.serde.loads_typed((kind or "", blob))
    return datetime.fromisoformat(checkpoint["ts"])


def prune_graph_checkpoints(path: Path, now: datetime, days: int, vacuum: bool = False) -> ThreadsRemoved:
    """Deletes, from a LangGraph SQLite checkpoint file, the threads whose newest checkpoint was saved
    more than `days` before `now`, in one transaction (a thread is a (cycle, symbol, input); only a rerun
    of a cycle that died resumes one, within days). A thread's age is its newest checkpoint's `ts`
    (LangGraph's save time; its id is a uuid6, so the greatest id is the newest). The file keeps its
    size and reuses the freed pages; `vacuum` shrinks it (rewrites the file, so it locks decide runs out
    while it runs)."""
    cutoff = _check(now, days)
    out = ThreadsRemoved()
    if not path.is_file():
        return out
    conn = sqlite3.connect(path, timeout=60)
    try:
        saver = SqliteSaver(conn)
        saver.setup()  # a file written by an older LangGraph gets the columns it reads
        newest = conn.execute(
            "SELECT c.thread_id, c.type, c.checkpoint FROM checkpoints c JOIN "
            "(SELECT thread_id, MAX(checkpoint_id) AS id FROM checkpoints GROUP BY thread_id) n "
            "ON c.thread_id = n.thread_id AND c.checkpoint_id = n.id"
        ).fetchall()
        old = sorted({thread for thread, kind, blob in newest if _newest_ts(saver, kind, blob) < cutoff})
        out.kept = len({thread for thread, _, _ in newest}) - len(old)
        with conn:  # one transaction: a thread goes whole or not at all
            for i in range(0, len(old), 500):
                chunk = old[i : i + 500]
                marks = ",".join("?" * len(chunk))
                out.checkpoints += conn.execute(f"DELETE FROM checkpoints WHERE thread_id IN ({marks})", chunk).rowcount
                conn.execute(f"DELETE FROM writes WHERE thread_id IN ({marks})", chunk)
        out.threads = len(old)
        if vacuum and old:
            conn.execute("VACUUM")
    finally:
        conn.close()
    return out
