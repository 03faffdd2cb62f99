"""Schedules follow the exchange calendar: Thanksgiving week 2024 has a holiday and a half day."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from assets.partitions import universe
from orchestration.schedules import build_schedules

NY = ZoneInfo("America/New_York")
WEEK_START = datetime(2024, 11, 25, 0, 0, tzinfo=NY)  # Thu 28th: holiday; Fri 29th: closes 13:00
WEEK_END = datetime(2024, 11, 30, 0, 0, tzinfo=NY)


def _fired_ticks(schedule: dg.ScheduleDefinition) -> list[datetime]:
    from orchestration.definitions import defs

    repo = defs.get_repository_def()
    crons = schedule.cron_schedule if isinstance(schedule.cron_schedule, list) else [schedule.cron_schedule]
    ticks: set[datetime] = set()
    for cron in crons:
        for tick in cron_string_iterator(WEEK_START.timestamp(), cron, "America/New_York"):
            if tick >= WEEK_END:
                break
            ticks.add(tick)
    fired = []
    with dg.instance_for_test() as instance:
        for tick in sorted(ticks):
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=repo) as ctx:
                data = schedule.evaluate_tick(ctx)
            if data.run_requests:
                assert len(data.run_requests) == len(universe())
                assert len({r.run_key for r in data.run_requests}) == len(universe())
                assert set(instance.get_dynamic_partitions("symbols")) == set(universe())  # registered by the tick
                fired.append(tick.astimezone(NY).replace(tzinfo=None))
            else:
                assert data.skip_message, f"{schedule.name} at {tick}: neither runs nor a reason"
    return fired


def _at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2024, 11, day, hour, minute)


def _quarter_hours(day: int, last_hour: int, last_minute: int) -> list[datetime]:
    out, h, m = [], 9, 45
    while (h, m) <= (last_hour, last_minute):
        out.append(_at(day, h, m))
        h, m = (h + 1, 0) if m == 45 else (h, m + 15)
    return out


@pytest.fixture(scope="module")
def schedules() -> dict[str, dg.ScheduleDefinition]:
    from orchestration.definitions import defs

    return {s.name: defs.resolve_schedule_def(s.name) for s in build_schedules()}


def test_market_open_skips_the_holiday(schedules: dict[str, dg.ScheduleDefinition]) -> None:
    assert _fired_ticks(schedules["market_open_schedule"]) == [_at(d, 9, 35) for d in (25, 26, 27, 29)]


def test_close_moves_on_the_half_day(schedules: dict[str, dg.ScheduleDefinition]) -> None:
    assert _fired_ticks(schedules["market_close_schedule"]) == [_at(25, 16, 5), _at(26, 16, 5), _at(27, 16, 5), _at(29, 13, 5)]


def test_intraday_stops_at_each_days_close(schedules: dict[str, dg.ScheduleDefinition]) -> None:
    expected = [t for d in (25, 26, 27) for t in _quarter_hours(d, 15, 45)] + _quarter_hours(29, 12, 45)
    assert _fired_ticks(schedules["intraday_schedule"]) == expected


def test_bad_interval_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_INTRADAY_MINUTES", "7")
    with pytest.raises(ValueError, match="must divide 30"):
        build_schedules()
