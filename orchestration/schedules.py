"""Schedules on the exchange calendar (America/New_York): holidays skip, half days move the close.

Cron only says "weekdays at these minutes"; each tick then asks the calendar whether it is a real
event time today, and skips with the reason when it is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

import dagster as dg

from assets.partitions import add_symbols, daily_key, intraday_key, last_closed_session
from orchestration import market_times as mt
from orchestration.jobs import decide_job, end_of_day_job, ingest_daily_job, ingest_intraday_job, screener_job
from orchestration.settings import PARTITION_VARIABLES, settings

TimesForDay = Callable[[date], list[datetime]]
RequestsAt = Callable[[datetime], list[dg.RunRequest] | dg.SkipReason]


def exchange_schedule(
    name: str,
    job: dg.UnresolvedAssetJobDefinition | dg.JobDefinition,
    cron: list[str],
    times_for_day: TimesForDay,
    requests_at: RequestsAt,
    description: str,
) -> dg.ScheduleDefinition:
    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone=mt.EXCHANGE_TZ, description=description)
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        tick = context.scheduled_execution_time
        if tick is None:
            return dg.SkipReason("no scheduled time on this evaluation")
        local = tick.astimezone(mt.NY)
        if not mt.is_session_day(local.date()):
            return dg.SkipReason(f"{local.date()} is not a trading day")
        if not any(abs((t - tick).total_seconds()) < 1 for t in times_for_day(local.date())):
            return dg.SkipReason(f"{local:%Y-%m-%d %H:%M} is not a {name} time today (half day or outside the session)")
        requests = requests_at(tick)
        symbols = _requested_symbols(requests)
        if symbols:  # dynamic partitions: registered before the requests are resolved against them
            add_symbols(context.instance, symbols)
        return requests

    return _schedule


def _requested_symbols(requests: list[dg.RunRequest] | dg.SkipReason) -> set[str]:
    if isinstance(requests, dg.SkipReason):
        return set()
    return {r.partition_key.keys_by_dimension["symbol"] for r in requests if isinstance(r.partition_key, dg.MultiPartitionKey)}


def _cron_at(minutes_after_midnight: list[int]) -> list[str]:
    return sorted({f"{m % 60} {m // 60} * * 1-5" for m in minutes_after_midnight})


def _interval_cron(n: int) -> list[str]:
    if n <= 0 or 30 % n:
        raise ValueError(f"intraday interval {n} min must divide 30 so ticks align with the 9:30 open")
    return [f"*/{n} 9-16 * * 1-5"]


def _universe() -> list[str]:
    """QUANTLAKE_UNIVERSE at the tick, sorted as the partitions list it (only the partitions' variables
    are read: an unrelated bad value does not stop the ingest)."""
    return sorted(settings(only=PARTITION_VARIABLES).universe_symbols)


def _ingest_day_requests(tick: datetime) -> list[dg.RunRequest]:
    day = tick.astimezone(mt.NY).date().isoformat()
    return [
        dg.RunRequest(run_key=f"{tick.isoformat()}|{day}|{s}", partition_key=intraday_key(day, s)) for s in _universe()
    ]


def _ingest_year_requests(tick: datetime) -> list[dg.RunRequest]:
    # The year of the last closed session: on a year's first session, the last year's final bar.
    year = str(last_closed_session(tick, settings(only=PARTITION_VARIABLES).exchange).year)
    return [dg.RunRequest(run_key=f"{tick.isoformat()}|{year}|{s}", partition_key=daily_key(year, s)) for s in _universe()]


def build_schedules() -> list[dg.ScheduleDefinition]:
    env = settings()  # QUANTLAKE_OPEN_OFFSET_MIN, _INTRADAY_MINUTES, _CLOSE_OFFSET_MIN: whole minutes, not negative
    open_offset, interval, close_offset = env.open_offset_min, env.intraday_minutes, env.close_offset_min
    flatten_lead = _flatten_lead()
    return [
        exchange_schedule(
            "market_open_schedule",
            ingest_daily_job,
            _cron_at([9 * 60 + 30 + open_offset]),
            lambda d: mt.at_open(d, open_offset),
            _ingest_year_requests,
            "At the open (+offset): the daily bars of the last closed session's year (a new year's first open: the old year's last bar).",
        ),
        exchange_schedule(
            "intraday_schedule",
            ingest_intraday_job,
            _interval_cron(interval),
            lambda d: mt.every_n_minutes(d, interval),
            _ingest_day_requests,
            "Every N minutes in the session: today's 1-minute bars so far.",
        ),
        exchange_schedule(
            "market_close_schedule",
            ingest_intraday_job,
            _cron_at([13 * 60 + close_offset, 16 * 60 + close_offset]),
            lambda d: mt.at_close(d, close_offset),
            _ingest_day_requests,
            "After the close (half days at 13:00): the session's final 1-minute bars.",
        ),
        exchange_schedule(
            "screener_schedule",
            screener_job,
            _cron_at([_minutes(t) for t in _screener_times(date(2024, 1, 2), open_offset)]),  # a regular day's times
            lambda d: _screener_times(d, open_offset),
            _screener_requests,
            f"Each session, {SCREENER_LEAD_MIN} min before the first decision time (not before the daily bars' ingest at the open "
            f"+ offset + {INGEST_GRACE_MIN} min): the day's screen, which the day's decide runs read; skipped while the screener is off.",
        ),
        exchange_schedule(
            "decision_schedule",
            decide_job,
            _cron_at([t.hour * 60 + t.minute for t in decision_times()] + [13 * 60 - flatten_lead, 16 * 60 - flatten_lead]),
            lambda d: mt.at_times(d, decision_times()) + mt.at_close(d, -flatten_lead),
            lambda tick: _decision_requests(tick, flatten_at=mt.at_close(tick.astimezone(mt.NY).date(), -flatten_lead)),
            "At fixed times in the session (default 11:00 and 14:30 New York): one decision cycle, skipped while halted; "
            "and at the trading window's end (the limits' flatten_before_close_min before the close, half days too): the cycle that flattens.",
        ),
        exchange_schedule(
            "end_of_day_schedule",
            end_of_day_job,
            _cron_at([13 * 60 + close_offset, 16 * 60 + close_offset]),
            lambda d: mt.at_close(d, close_offset),
            _end_of_day_requests,
            "After the close (half days at 13:00): flatten if configured, and the day's report.",
        ),
    ]


DEFAULT_FIXED_TIMES = (time(11, 0), time(14, 30))
SCREENER_LEAD_MIN = 30  # the screen is written this long before the day's first decision
INGEST_GRACE_MIN = 5  # after the open's daily ingest (the prior session's bar) has had time to land


def _minutes(t: datetime) -> int:
    local = t.astimezone(mt.NY)
    return local.hour * 60 + local.minute


def _screener_times(day: date, open_offset: int) -> list[datetime]:
    """When `day`'s screen runs: SCREENER_LEAD_MIN before its first decision time (half days drop the late
    ones), but after the open's daily ingest; nothing on a day with no decision time in the session."""
    first = mt.at_times(day, decision_times())[:1]
    if not first:
        return []
    [after_ingest] = mt.at_open(day, open_offset + INGEST_GRACE_MIN)
    return [max(first[0] - timedelta(minutes=SCREENER_LEAD_MIN), after_ingest)]


def screener_on() -> bool:
    """The screener's switch at the tick: QUANTLAKE_SCREENER with the pipeline file's `screener:` over it."""
    from assets.screener import screener_settings, with_section
    from orchestration.resources import trading_resource

    return with_section(screener_settings(), trading_resource().pipeline().screener).enabled


def _screener_requests(tick: datetime) -> list[dg.RunRequest] | dg.SkipReason:
    day = tick.astimezone(mt.NY).date().isoformat()
    try:
        if not screener_on():
            return dg.SkipReason("the screener is off (QUANTLAKE_SCREENER, or `screener: enabled` in the pipeline file)")
    except ValueError as exc:  # a bad setting or pipeline file, named
        return dg.SkipReason(f"screener: {exc}")
    return [dg.RunRequest(run_key=f"screener|{day}", partition_key=day)]


def decision_times() -> tuple[time, ...]:
    """QUANTLAKE_DECISION_TIMES as HH:MM,HH:MM (New York), default 11:00 and 14:30."""
    raw = settings().decision_times  # validated there: a bad time names the variable
    if not raw.strip():
        return DEFAULT_FIXED_TIMES
    return tuple(sorted(time.fromisoformat(part.strip()) for part in raw.split(",") if part.strip()))


def trading_halted(now: datetime | None = None) -> str | None:
    """The ledger's halt (kill switch or drawdown not yet resumed), read at the tick."""
    from orchestration.jobs import trading_halted as halted
    from orchestration.resources import trading_resource

    return halted(trading_resource(), now)


def _trading_tags() -> dict[str, str]:
    env = settings()
    return {"quantlake/mode": env.mode, "quantlake/strategy": env.strategy}


def decision_run_config() -> dict[str, object]:
    """The scheduled strategy: QUANTLAKE_STRATEGY (default sma_cross) and QUANTLAKE_STRATEGY_PARAMS (JSON)."""
    env = settings()  # the parameters are validated there: a JSON object, or the variable is named
    config = {"strategy": env.strategy, "params": json.loads(env.strategy_params)}
    if timeframe := env.decision_timeframe:  # e.g. 1m for intraday decisions
        config["timeframe"] = timeframe
    return {"ops": {"decision_cycle": {"config": config}}}


def _flatten_lead() -> int:
    """The pipeline file's `limits.flatten_before_close_min` (the decision run that flattens)."""
    from orchestration.jobs import _limits
    from orchestration.resources import trading_resource

    return _limits(trading_resource()).flatten_before_close_min


def _decision_requests(tick: datetime, flatten_at: list[datetime] | None = None) -> list[dg.RunRequest] | dg.SkipReason:
    flattening = any(abs((t - tick).total_seconds()) < 1 for t in flatten_at or [])
    halted = trading_halted(tick)
    if halted and not flattening:  # a halt keeps positions a drawdown left: the window's end still flattens them
        return dg.SkipReason(f"trading is halted ({halted}); resume_job lifts it")
    tags = _trading_tags() | ({"quantlake/purpose": "flatten"} if flattening else {})
    return [dg.RunRequest(run_key=f"decide|{tick.isoformat()}", run_config=decision_run_config(), tags=tags)]


def _end_of_day_requests(tick: datetime) -> list[dg.RunRequest] | dg.SkipReason:
    day = tick.astimezone(mt.NY).date().isoformat()
    config = {"ops": {"end_of_day_report": {"config": {"day": day}}}}
    return [dg.RunRequest(run_key=f"eod|{day}", run_config=config, tags=_trading_tags())]
