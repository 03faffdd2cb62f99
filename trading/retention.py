"""Retention below the orchestration: the LLM response cache's old entries, and the ledger's archive.

The cache's entries carry no time of their own, so an entry's age is its file's modification time
(when it was recorded), against the `now` the caller passes. A replay of a cycle younger than the
retention finds every answer it recorded; an older one reports misses (never a model call).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

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
