"""The news schedule: `ingest_news_job` at 08:45 and 20:00 New York on exchange sessions.

A news partition is a session day whose window runs from 00:00 New York of that day to 00:00 of the
next session's day, so the night, the weekend and a holiday belong to the session before. Hence:
- the day's first tick (08:45, before the open and the first decision) fetches the previous
  session's partition, now complete (its window closed at 00:00), and today's so far;
- the later tick (20:00, after the close, half days too) fetches today's so far again.
Sessions only, not every weekday: a tick on a holiday or a weekend could only refetch a window that
is still open, and the next session's morning tick fetches it whole anyway; nothing is lost.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import dagster as dg

from assets.news import ingest_news_job
from lake.calendar import trading_days
from orchestration import market_times as mt
from orchestration.schedules import _cron_at, exchange_schedule
from orchestration.settings import settings

DEFAULT_NEWS_TIMES = (time(8, 45), time(20, 0))


def news_times() -> tuple[time, ...]:
    """QUANTLAKE_NEWS_TIMES as HH:MM,HH:MM (New York), default 08:45 and 20:00."""
    raw = settings().news_times  # validated there: a bad time names the variable
    if not raw.strip():
        return DEFAULT_NEWS_TIMES
    return tuple(sorted({time.fromisoformat(part.strip()) for part in raw.split(",") if part.strip()}))


def _times_for_day(day: date) -> list[datetime]:
    return [datetime.combine(day, t, tzinfo=mt.NY) for t in news_times()]  # any hour: not only inside the session


def previous_session(day: date, exchange_name: str = "XNYS") -> date:
    return trading_days(day - timedelta(days=14), day - timedelta(days=1), exchange_name)[-1]


def news_partitions_at(tick: datetime, exchange_name: str = "XNYS") -> list[str]:
    """The partitions a tick on a session day fetches: the day's first tick the previous session's
    (its window closed at 00:00) and today's so far; a later tick today's so far."""
    local = tick.astimezone(mt.NY)
    day = local.date()
    first = min(news_times())
    days = [day]
    if local.time().replace(second=0, microsecond=0) == first:
        days.insert(0, previous_session(day, exchange_name))
    return [d.isoformat() for d in days]


def _news_requests(tick: datetime) -> list[dg.RunRequest]:
    return [dg.RunRequest(run_key=f"news|{tick.isoformat()}|{key}", partition_key=key) for key in news_partitions_at(tick, settings().exchange)]


def build_news_schedule() -> dg.ScheduleDefinition:
    times = news_times()
    return exchange_schedule(
        "news_schedule",
        ingest_news_job,
        _cron_at([t.hour * 60 + t.minute for t in times]),
        _times_for_day,
        _news_requests,
        "At 08:45 and 20:00 New York on sessions (QUANTLAKE_NEWS_TIMES): the previous session's headlines, complete, "
        "at the day's first tick, and today's so far at each tick (weekends and holidays belong to the session before).",
    )
