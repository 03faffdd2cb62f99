"""Retention below the orchestration: the LLM response cache's old entries, and the graph's old checkpoints.

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

    if not where or where == MEMORY_CHECKPOINT or where.startswith(("postgresql://", "postgres://")):
        return None
    return Path(where.removeprefix("sqlite:///"))


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
    if now.tzinfo is None:
        raise ValueError(f"retention now={now} is timezone-naive; pass an aware datetime")
    if days < 1:
        raise ValueError(f"graph checkpoint retention of {days} days: expected at least 1 day")
    out = ThreadsRemoved()
    if not path.is_file():
        return out
    cutoff = now - timedelta(days=days)
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
