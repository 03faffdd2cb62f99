"""The trading window on the exchange calendar, per bar: where entries may start and the book is flattened.

One rule for a step at `now` (its bar's timestamp), the one `trading.safety` applies live: the
session is the exchange-local date of `now`; on a session, entries from the open +
`open_delay_min` until `flatten_before_close_min` before the close (half days close early: 12:55 on
a 13:00 close with 5 minutes); from that instant on, and on a day without a session, no entry, and
with `flatten_at_close` the flatten is due (`strategies.controls`). `trading_window` is the rule for
one session; the backtest reads it as arrays over its bars (`bar_controls`, from the calendar's
schedule in bulk; tests/backtests/test_window.py holds both to `trading.safety`'s at every instant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl

from lake.calendar import get_calendar, is_trading_day, session_bounds


def session_of(now: datetime, exchange: str) -> date:
    """The exchange-local date of `now`: the session its marks, trades and daily loss belong to."""
    return now.astimezone(get_calendar(exchange).tz).date()


def trading_window(
    day: date, exchange: str, open_delay_min: int, flatten_before_close_min: int
) -> tuple[datetime, datetime, datetime] | None:
    """(entries from, entries until = flatten at, close) of `day`'s session; None on a day without one."""
    if not is_trading_day(day, exchange):
        return None
    open_, close = session_bounds(day, exchange)
    return (
        open_ + timedelta(minutes=open_delay_min),
        close - timedelta(minutes=flatten_before_close_min),
        close,
    )


@dataclass(frozen=True)
class BarControls:
    """Per bar: its session (an ordinal: a new value starts the daily counts), whether an entry may be
    sent at it, and whether the window's flatten is due at it."""

    session: np.ndarray  # int64: the exchange-local date, in days since 1970-01-01
    entry_ok: np.ndarray  # bool
    flatten: np.ndarray  # bool


def bar_controls(
    ts: pl.Series, exchange: str, open_delay_min: int, flatten_before_close_min: int, flatten_at_close: bool
) -> BarControls:
    """`trading_window` at every timestamp of `ts` (UTC, time-aware): the sessions' opens and closes
    read from the calendar's schedule at once (one lookup per session costs ~2 ms)."""
    calendar = get_calendar(exchange)
    days = ts.dt.convert_time_zone(calendar.tz.key).dt.date()
    unique = days.unique()
    schedule = calendar.schedule[["open", "close"]].reindex(pd.DatetimeIndex(unique.to_list()))
    utc = ts.dtype

    def column(name: str) -> pl.Series:  # the schedule's UTC instants (NaT: no session) as `ts`'s dtype
        naive = pl.Series(schedule[name].dt.tz_convert(None).to_numpy()).cast(pl.Datetime("us"))
        return naive.dt.replace_time_zone("UTC").cast(utc)

    table = pl.DataFrame({"day": unique, "open": column("open"), "close": column("close")})
    # A day without a session (no open): an empty window before every bar, so no entry and the flatten due.
    first = pl.lit(ts.min(), dtype=utc)
    table = table.select(
        "day",
        start=pl.coalesce(pl.col("open") + pl.duration(minutes=open_delay_min), first),
        end=pl.coalesce(pl.col("close") - pl.duration(minutes=flatten_before_close_min), first),
    )
    frame = pl.DataFrame({"ts": ts, "day": days}).join(table, on="day", how="left", maintain_order="left")
    now, start, end = frame["ts"], frame["start"], frame["end"]
    entry_ok = ((now >= start) & (now < end)).to_numpy()
    flatten = (now >= end).to_numpy() & flatten_at_close
    session = frame["day"].to_physical().to_numpy().astype(np.int64)
    return BarControls(session, entry_ok, flatten)
