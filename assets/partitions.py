"""Partitions on the exchange's sessions, on years and on symbols; all of them grow without a reload.

- Trading days: a daily time window on the exchange's time zone whose non-session days (the
  weekmask's days off and the calendar's holidays) are exclusions. Dagster computes the keys when
  asked, up to today's session (or the next one on a day off): a code location loaded in January
  still has March's partitions in March.
- Years: a yearly time window up to the current year.
- Symbols: dynamic partitions named `symbols`, registered in the instance wherever runs are launched
  (`add_symbols`: schedules, the CLI, the demo, the bulk backfill). Keys are only ever added: a symbol
  dropped from QUANTLAKE_UNIVERSE keeps its partitions and its history.

Settings (README), read by orchestration/settings.py and passed down (`use_settings`; this module
never reads the environment): QUANTLAKE_UNIVERSE, the symbols the schedules ingest, asked for at
every tick; QUANTLAKE_PARTITION_START, the first trading day (and its year) with partitions; by
default where the demo's data starts as of loading: the first of its last 20 sessions of 1-minute
bars, and the year of the first of its last 252 sessions of daily bars. QUANTLAKE_EXCHANGE, the
calendar. The start and the exchange are asked for once, when the partitions are first used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import dagster as dg
import pandas as pd

from lake.calendar import CAL_END, DEFAULT_EXCHANGE, get_calendar, session_bounds, trading_days

DEFAULT_UNIVERSE = ("AAPL", "MSFT", "AMZN", "GOOGL", "NVDA", "META", "JPM", "XOM")
SYMBOLS = "symbols"  # the dynamic partitions' name in the instance
DEMO_MINUTE_SESSIONS = 20
DEMO_DAILY_SESSIONS = 252


@dataclass(frozen=True)
class PartitionSettings:
    """The values orchestration's settings pass down to the assets."""

    universe: tuple[str, ...] = DEFAULT_UNIVERSE
    exchange: str = DEFAULT_EXCHANGE
    start: date | None = None  # the first partitioned session; None: where the demo's data starts


_source: Callable[[], PartitionSettings] | None = None


def use_settings(source: Callable[[], PartitionSettings]) -> None:
    """Orchestration hands over where the values come from (called when `orchestration` is imported,
    before any asset module is: orchestration/settings.py `pass_settings_down`)."""
    global _source
    _source = source


def current_settings() -> PartitionSettings:
    # No silent defaults: a configured universe or start that never arrived would look like data loss.
    if _source is None:
        raise RuntimeError(
            "assets.partitions has no settings: import orchestration first (it passes QUANTLAKE_UNIVERSE, "
            "QUANTLAKE_EXCHANGE and QUANTLAKE_PARTITION_START down to the assets)"
        )
    return _source()


def universe() -> list[str]:
    return sorted(dict.fromkeys(current_settings().universe or DEFAULT_UNIVERSE))


def exchange() -> str:
    return current_settings().exchange


def last_closed_session(now: datetime, exchange: str = DEFAULT_EXCHANGE) -> date:
    days = trading_days(now.date() - timedelta(days=10), now.date(), exchange)
    return [d for d in days if session_bounds(d, exchange)[1] <= now][-1]


def recent_sessions(end: date, n: int, exchange: str = DEFAULT_EXCHANGE) -> list[date]:
    """The last `n` sessions up to `end` (inclusive)."""
    return trading_days(end - timedelta(days=int(n * 1.6) + 10), end, exchange)[-n:]


def default_starts(now: datetime, exchange: str = DEFAULT_EXCHANGE) -> tuple[date, int]:
    """Where the demo's data starts as of `now`: its first 1-minute session and its first year."""
    end = last_closed_session(now, exchange)
    return recent_sessions(end, DEMO_MINUTE_SESSIONS, exchange)[0], recent_sessions(end, DEMO_DAILY_SESSIONS, exchange)[0].year


def _days_off(start: date, exchange: str) -> list[str | datetime]:
    """Exclusions: the weekmask's days off as crons, and weekdays that are not sessions (holidays)."""
    cal = get_calendar(exchange)
    off = [i for i, on in enumerate(cal.weekmask) if on == "0"]  # Monday = 0
    crons: list[str | datetime] = [f"0 0 * * {(i + 1) % 7}" for i in off]  # cron: Sunday = 0
    weekdays = pd.bdate_range(start, CAL_END, freq="C", weekmask=cal.weekmask)
    holidays = weekdays.difference(cal.sessions)
    return crons + [ts.to_pydatetime() for ts in holidays]


def session_partitions(start: date, exchange: str = DEFAULT_EXCHANGE) -> dg.TimeWindowPartitionsDefinition:
    """One partition per session from `start` on, up to today's (end_offset=1: the open window)."""
    first = trading_days(start, start + timedelta(days=10), exchange)[0]
    return dg.TimeWindowPartitionsDefinition(
        start=datetime(first.year, first.month, first.day),
        fmt="%Y-%m-%d",
        cron_schedule="0 0 * * *",
        timezone=get_calendar(exchange).tz.key,
        end_offset=1,
        exclusions=_days_off(first, exchange),
    )


def year_partitions(first_year: int, exchange: str = DEFAULT_EXCHANGE) -> dg.TimeWindowPartitionsDefinition:
    """One partition per year from `first_year` on, up to the current one."""
    return dg.TimeWindowPartitionsDefinition(
        start=datetime(first_year, 1, 1), fmt="%Y", cron_schedule="0 0 1 1 *", timezone=get_calendar(exchange).tz.key, end_offset=1
    )


class Partitions(NamedTuple):
    trading_day: dg.TimeWindowPartitionsDefinition
    years: dg.TimeWindowPartitionsDefinition
    # Intraday data: one partition per (trading day, symbol). Daily bars: one per (year, symbol), since
    # a trading-day partition of daily bars would hold a single row.
    intraday: dg.MultiPartitionsDefinition
    daily: dg.MultiPartitionsDefinition


symbol_partitions = dg.DynamicPartitionsDefinition(name=SYMBOLS)


def build_partitions(exchange: str, start: date | None, now: datetime) -> Partitions:
    """The partitions from `start` (None: where the demo's data starts as of `now`) on `exchange`."""
    day_start, first_year = (start, start.year) if start is not None else default_starts(now, exchange)
    trading_day, years = session_partitions(day_start, exchange), year_partitions(first_year, exchange)
    return Partitions(
        trading_day=trading_day,
        years=years,
        intraday=dg.MultiPartitionsDefinition({"date": trading_day, "symbol": symbol_partitions}),
        daily=dg.MultiPartitionsDefinition({"year": years, "symbol": symbol_partitions}),
    )


# The asset modules' partitions, built on first use (module __getattr__) from the settings passed down:
# importing this module to call `use_settings` must not build them from values not yet given.
trading_day_partitions: dg.TimeWindowPartitionsDefinition
years_partitions: dg.TimeWindowPartitionsDefinition
intraday_partitions: dg.MultiPartitionsDefinition
daily_partitions: dg.MultiPartitionsDefinition
_BUILT_ON_USE = {"trading_day_partitions": "trading_day", "years_partitions": "years", "intraday_partitions": "intraday", "daily_partitions": "daily"}


def __getattr__(name: str) -> object:
    if name not in _BUILT_ON_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    values = current_settings()
    built = build_partitions(values.exchange, values.start, datetime.now(UTC))
    globals().update({module_name: getattr(built, field) for module_name, field in _BUILT_ON_USE.items()})
    return globals()[name]


def intraday_key(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


def daily_key(year: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"year": year, "symbol": symbol})


def add_symbols(instance: dg.DagsterInstance, symbols: Iterable[str]) -> list[str]:
    """Registers `symbols` as partitions (only those missing: idempotent); returns the new ones."""
    new = sorted(set(symbols) - set(instance.get_dynamic_partitions(SYMBOLS)))
    if new:
        instance.add_dynamic_partitions(SYMBOLS, new)
    return new


def unknown_periods(partitions_def: dg.MultiPartitionsDefinition, keys: Iterable[dg.MultiPartitionKey]) -> list[str]:
    """The keys whose day or year `partitions_def` does not have as of now (e.g. before the start)."""
    [time_dim] = [d for d in partitions_def.partitions_defs if isinstance(d.partitions_def, dg.TimeWindowPartitionsDefinition)]
    return [str(k) for k in keys if not time_dim.partitions_def.has_partition_key(k.keys_by_dimension[time_dim.name])]
