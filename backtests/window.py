"""The trading window on the exchange calendar, per bar: where entries may start and the book is flattened.

One rule for a step at `now` (its bar's timestamp), the one `trading.safety` applies live: the
session is the exchange-local date of `now`; on a session, entries from the open +
`open_delay_min` until `flatten_before_close_min` before the close (half days close early: 12:55 on
a 13:00 close with 5 minutes); from that instant on, and on a day without a session, no entry, and
with `flatten_at_close` the flatten is due (`strategies.controls`). `session_window` is the rule for
one session, `trading_window` looks the session up for it (`trading.safety` calls it); the backtest
reads it as arrays over its bars (`bar_controls`, from the calendar's schedule in bulk;
tests/backtests/test_window.py holds both to `trading.safety`'s at every instant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar, overload

import numpy as np
import pandas as pd
import polars as pl

from lake.calendar import get_calendar, is_trading_day, session_bounds


def session_of(now: datetime, exchange: str) -> date:
    """The exchange-local date of `now`: the session its marks, trades and daily loss belong to."""
    return now.astimezone(get_calendar(exchange).tz).date()


Instant = TypeVar("Instant", datetime, pd.Series)


def session_window(
    open_: Instant, close: Instant, open_delay_min: int, flatten_before_close_min: int
) -> tuple[Instant, Instant, Instant]:
    """(entries from, entries until = flatten at, close) of the session open at `open_`, closing at
    `close`: the window's one rule, for the live step (`trading_window`: one session's instants) and
    the backtest (`bar_controls`: every session's at once, as the schedule's columns)."""
    return (
        open_ + timedelta(minutes=open_delay_min),
        close - timedelta(minutes=flatten_before_close_min),
        close,
    )


@overload
def may_enter(now: datetime, start: datetime, end: datetime) -> bool: ...
@overload
def may_enter(now: pl.Series, start: pl.Series, end: pl.Series) -> pl.Series: ...
def may_enter(now: Any, start: Any, end: Any) -> Any:
    """Whether an entry may be sent at `now` in the window (`start`, `end`) of `session_window`: for
    one instant (the live step) or a column of bars (the backtest)."""
    return (start <= now) & (now < end)


@overload
def flatten_from(now: datetime, end: datetime) -> bool: ...
@overload
def flatten_from(now: pl.Series, end: pl.Series) -> pl.Series: ...
def flatten_from(now: Any, end: Any) -> Any:
    """Whether the window that ends at `end` is over at `now`: no entry, and the flatten is due."""
    return now >= end


def trading_window(
    day: date, exchange: str, open_delay_min: int, flatten_before_close_min: int
) -> tuple[datetime, datetime, datetime] | None:
    """(entries from, entries until = flatten at, close) of `day`'s session; None on a day without one."""
    if not is_trading_day(day, exchange):
        return None
    open_, close = session_bounds(day, exchange)
    return session_window(open_, close, open_delay_min, flatten_before_close_min)


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
    read from the calendar's schedule at once (one lookup per session costs ~2 ms), each session's
    window from `session_window` (one call per session, not per bar)."""
    calendar = get_calendar(exchange)
    days = ts.dt.convert_time_zone(calendar.tz.key).dt.date()
    unique = days.unique()
    schedule = calendar.schedule[["open", "close"]].reindex(pd.DatetimeIndex(unique.to_list()))
    utc = ts.dtype
    # Every session's window in one call of the rule, on the schedule's columns (NaT: no session).
    start, end, _ = session_window(
        schedule["open"], schedule["close"], open_delay_min, flatten_before_close_min
    )

    def column(instants: pd.Series) -> pl.Series:  # UTC instants (NaT: no session) as `ts`'s dtype
        naive = pl.Series(instants.dt.tz_convert(None).to_numpy()).cast(pl.Datetime("us"))
        return naive.dt.replace_time_zone("UTC").cast(utc)

    # A day without a session: an empty window before every bar, so no entry and the flatten due.
    first = pl.lit(ts.min(), dtype=utc)
    table = pl.DataFrame({"day": unique, "start": column(start), "end": column(end)})
    table = table.with_columns(pl.col("start").fill_null(first), pl.col("end").fill_null(first))
    frame = pl.DataFrame({"ts": ts, "day": days}).join(table, on="day", how="left", maintain_order="left")
    now, start, end = frame["ts"], frame["start"], frame["end"]
    entry_ok = may_enter(now, start, end).to_numpy()
    flatten = flatten_from(now, end).to_numpy() & flatten_at_close
    session = frame["day"].to_physical().to_numpy().astype(np.int64)
    return BarControls(session, entry_ok, flatten)
