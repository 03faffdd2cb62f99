"""Exchange trading days and session hours (XNYS by default) via exchange-calendars.

Holidays and half days come from the calendar, never from hand-written rules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd
import polars as pl

from lake.errors import LakeError
from lake.schema import TS_DTYPE

DEFAULT_EXCHANGE = "XNYS"
EXCHANGE_TZ = "America/New_York"
_CAL_START = "2005-01-01"
# Bounded explicitly: exchange-calendars' default end is a year after today, so anything sized by
# "the whole calendar" would change from day to day. Sessions past this date are simply not there.
CAL_END = "2049-12-31"


@lru_cache(maxsize=4)
def get_calendar(exchange: str = DEFAULT_EXCHANGE) -> xcals.ExchangeCalendar:
    try:
        return xcals.get_calendar(exchange, start=_CAL_START, end=CAL_END)
    except xcals.errors.InvalidCalendarName as exc:
        raise LakeError(f"unknown exchange calendar {exchange!r}") from exc


def _as_date(value: date | str) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def trading_days(start: date | str, end: date | str, exchange: str = DEFAULT_EXCHANGE) -> list[date]:
    """Trading days in [start, end], both inclusive."""
    start_d, end_d = _as_date(start), _as_date(end)
    if end_d < start_d:
        raise LakeError(f"empty range: end {end_d} is before start {start_d}")
    cal = get_calendar(exchange)
    lo = max(pd.Timestamp(start_d), cal.first_session)
    hi = min(pd.Timestamp(end_d), cal.last_session)
    if hi < lo:
        return []
    return [ts.date() for ts in cal.sessions_in_range(lo, hi)]


def is_trading_day(day: date | str, exchange: str = DEFAULT_EXCHANGE) -> bool:
    return get_calendar(exchange).is_session(pd.Timestamp(_as_date(day)))


def session_bounds(day: date | str, exchange: str = DEFAULT_EXCHANGE) -> tuple[datetime, datetime]:
    """(open, close) of a trading day in UTC; half days close early."""
    d = _as_date(day)
    cal = get_calendar(exchange)
    ts = pd.Timestamp(d)
    if not cal.is_session(ts):
        raise LakeError(f"{d} is not a trading day on {exchange}")
    return cal.session_open(ts).to_pydatetime(), cal.session_close(ts).to_pydatetime()


def session_minutes(day: date | str, exchange: str = DEFAULT_EXCHANGE) -> pl.Series:
    """Bar-open timestamps (UTC) of every 1-minute bar of a session: open, open+1m, ..., close-1m."""
    open_, close = session_bounds(day, exchange)
    return pl.datetime_range(open_, close, interval="1m", closed="left", eager=True, time_zone="UTC").cast(TS_DTYPE).alias("ts")


def sessions_frame(start: date | str, end: date | str, exchange: str = DEFAULT_EXCHANGE) -> pl.DataFrame:
    """One row per trading day: date, open (UTC), close (UTC). Used to check session hours fast."""
    days = trading_days(start, end, exchange)
    cal = get_calendar(exchange)
    if not days:
        return pl.DataFrame(schema={"date": pl.Date(), "open": TS_DTYPE, "close": TS_DTYPE})
    idx = pd.DatetimeIndex([pd.Timestamp(d) for d in days])
    opens = cal.schedule.loc[idx, "open"]
    closes = cal.schedule.loc[idx, "close"]
    return pl.DataFrame(
        {
            "date": days,
            "open": pl.Series(opens.to_list()).cast(TS_DTYPE),
            "close": pl.Series(closes.to_list()).cast(TS_DTYPE),
        }
    )


def start_of_local_day(moment: datetime) -> datetime:
    """00:00 exchange time (New York) of `moment`'s exchange-local date, in UTC."""
    local = moment.astimezone(ZoneInfo(EXCHANGE_TZ))
    return datetime.combine(local.date(), time(), tzinfo=ZoneInfo(EXCHANGE_TZ)).astimezone(UTC)


def restamp_daily(bars: pl.DataFrame, exchange: str = DEFAULT_EXCHANGE) -> pl.DataFrame:
    """Daily bars stamped at their session's open, whatever time of day a vendor or file stamps them
    with (Alpaca: 00:00 New York; a file: often a bare date). A bar whose exchange-local date is no
    session keeps its stamp, so validation quarantines it with the reason instead of it vanishing."""
    if bars.is_empty() or bars["ts"].null_count() == bars.height:
        return bars
    local_day = pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ).dt.date()
    days = bars.select(local_day.alias("d")).drop_nulls()["d"]
    sessions = sessions_frame(days.min(), days.max(), exchange).select(pl.col("date").alias("_day"), pl.col("open").alias("_s_open"))  # type: ignore[arg-type]
    stamped = bars.with_columns(local_day.alias("_day")).join(sessions, on="_day", how="left", maintain_order="left")
    return stamped.with_columns(pl.coalesce("_s_open", "ts").alias("ts")).select(bars.columns)


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(EXCHANGE_TZ)).astimezone(UTC)


def day_window(day: date | str, exchange: str = DEFAULT_EXCHANGE) -> tuple[datetime, datetime]:
    """What a session's partition asks a source for: from 00:00 New York of the day to 00:00 of the
    next session's day. The windows tile time, nights, weekends and holidays included, so a bar
    outside any session is read by exactly one partition (and quarantined there), never by none."""
    d = _as_date(day)
    cal = get_calendar(exchange)
    if not cal.is_session(pd.Timestamp(d)):
        raise LakeError(f"{d} is not a trading day on {exchange}")
    following = cal.next_session(pd.Timestamp(d)).date()
    return _local_midnight(d), _local_midnight(following)


def year_window(year: int) -> tuple[datetime, datetime]:
    """What a year's partition asks a source for: 00:00 New York of 1 January to that of the next."""
    return _local_midnight(date(year, 1, 1)), _local_midnight(date(year + 1, 1, 1))
