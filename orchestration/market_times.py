"""When things happen on the exchange's clock: open + offset, every N minutes, fixed times, close.

Pure functions over the calendar, so schedules are tested by listing the times of a week.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from lake.calendar import EXCHANGE_TZ, is_trading_day, session_bounds

NY = ZoneInfo(EXCHANGE_TZ)


def at_open(day: date, offset_minutes: int = 0, exchange: str = "XNYS") -> list[datetime]:
    open_, close = session_bounds(day, exchange)
    t = open_ + timedelta(minutes=offset_minutes)
    return [t] if t < close else []


def every_n_minutes(day: date, n: int, exchange: str = "XNYS") -> list[datetime]:
    """Open + n, open + 2n, ... strictly before the close (the close has its own schedule)."""
    if n <= 0:
        raise ValueError(f"interval must be positive minutes, got {n}")
    open_, close = session_bounds(day, exchange)
    out, t = [], open_ + timedelta(minutes=n)
    while t < close:
        out.append(t)
        t += timedelta(minutes=n)
    return out


def at_times(day: date, times: tuple[time, ...], exchange: str = "XNYS") -> list[datetime]:
    """Fixed exchange-local times that fall inside the session (a half day drops the late ones)."""
    open_, close = session_bounds(day, exchange)
    stamps = [datetime.combine(day, t, tzinfo=NY) for t in times]
    return [s for s in stamps if open_ < s < close]


def at_close(day: date, offset_minutes: int = 0, exchange: str = "XNYS") -> list[datetime]:
    return [session_bounds(day, exchange)[1] + timedelta(minutes=offset_minutes)]


def is_session_day(day: date, exchange: str = "XNYS") -> bool:
    return is_trading_day(day, exchange)
