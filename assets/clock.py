"""The one place assets learn what time it is.

A run's "now" is, in order: the `quantlake/now` tag (an ISO instant: replay a run as of a past or
future moment without touching the machine's clock), the time its schedule fired (so a run launched
a few seconds late still decides as of its slot), else the wall clock. Everything below the assets
receives this value as a parameter; nothing in `lake/`, `strategies/`, `backtests/` or `trading/`
reads the clock to make a decision.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

NOW_TAG = "quantlake/now"
SCHEDULED_TAG = "dagster/scheduled_execution_time"
DAEMON_SCHEDULED_TAG = ".dagster/scheduled_execution_time"  # where dagster-daemon's scheduler puts it


def run_now(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> datetime:
    tags = context.run.tags if context.run is not None else {}
    for tag in (NOW_TAG, DAEMON_SCHEDULED_TAG, SCHEDULED_TAG):
        if tags.get(tag):
            try:
                stamp = datetime.fromisoformat(tags[tag])
            except ValueError as exc:
                raise dg.Failure(f"run tag {tag}={tags[tag]!r} is not an ISO time", allow_retries=False) from exc
            if stamp.tzinfo is None:
                raise dg.Failure(f"run tag {tag}={tags[tag]!r} needs a timezone (e.g. +00:00)", allow_retries=False)
            return stamp.astimezone(UTC)
    return datetime.now(UTC)
