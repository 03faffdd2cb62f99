"""The news schedule on frozen dates: Thanksgiving week 2024 (Thu 28th a holiday, Fri 29th a half
day), its weekend and the Monday after. Sessions only, 08:45 and 20:00 New York; every session's
partition is fetched once its window has closed, so a holiday's and a weekend's headlines arrive."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.definitions.schedule_definition import ScheduleExecutionData
from dagster._utils.schedules import cron_string_iterator

from assets.news import NewsResource
from assets.resources import LakeResource
from lake.news.store import read_news
from lake.news.validation import NewsWindow
from orchestration.news_schedule import build_news_schedule, news_times

NY = ZoneInfo("America/New_York")
START = datetime(2024, 11, 25, 0, 0, tzinfo=NY)
END = datetime(2024, 12, 3, 0, 0, tzinfo=NY)  # through Monday Dec 2nd


def _evaluate(schedule: dg.ScheduleDefinition, tick: datetime) -> ScheduleExecutionData:
    from orchestration.definitions import defs

    with dg.instance_for_test() as instance, dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as ctx:
        return schedule.evaluate_tick(ctx)


def _fired(schedule: dg.ScheduleDefinition) -> dict[datetime, list[str]]:
    """Every cron tick of the span evaluated as Dagster would: tick (New York, naive) -> partitions requested."""
    crons: list[str] = list(schedule.cron_schedule) if not isinstance(schedule.cron_schedule, str) else [schedule.cron_schedule]
    ticks = sorted({t for cron in crons for t in _until(cron_string_iterator(START.timestamp(), cron, "America/New_York"))})
    fired: dict[datetime, list[str]] = {}
    for tick in ticks:
        data = _evaluate(schedule, tick)
        assert isinstance(data, ScheduleExecutionData)
        if data.run_requests:
            assert len({r.run_key for r in data.run_requests}) == len(data.run_requests)
            fired[tick.astimezone(NY).replace(tzinfo=None)] = [str(r.partition_key) for r in data.run_requests]
        else:
            assert data.skip_message, f"{tick}: neither runs nor a reason"
    return fired


def _until(ticks: object) -> list[datetime]:
    out = []
    for tick in ticks:  # type: ignore[attr-defined]
        if tick >= END:
            break
        out.append(tick)
    return out


@pytest.fixture(scope="module")
def schedule() -> dg.ScheduleDefinition:
    from orchestration.definitions import defs

    return defs.resolve_schedule_def("news_schedule")


@pytest.fixture(scope="module")
def fired(schedule: dg.ScheduleDefinition) -> dict[datetime, list[str]]:
    return _fired(schedule)


def _at(month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(2024, month, day, hour, minute)


def test_news_runs_at_0845_and_2000_on_sessions_for_the_right_day_partitions(schedule: dg.ScheduleDefinition, fired: dict[datetime, list[str]]) -> None:
    assert schedule.job_name == "ingest_news_job"
    assert fired == {
        _at(11, 25, 8, 45): ["2024-11-22", "2024-11-25"],  # Friday's partition, weekend included, then today's so far
        _at(11, 25, 20, 0): ["2024-11-25"],
        _at(11, 26, 8, 45): ["2024-11-25", "2024-11-26"],
        _at(11, 26, 20, 0): ["2024-11-26"],
        _at(11, 27, 8, 45): ["2024-11-26", "2024-11-27"],
        _at(11, 27, 20, 0): ["2024-11-27"],
        # Thursday 28th: Thanksgiving, no run; its headlines are in Wednesday's partition, fetched Friday morning.
        _at(11, 29, 8, 45): ["2024-11-27", "2024-11-29"],
        _at(11, 29, 20, 0): ["2024-11-29"],  # the half day too: after its 13:00 close
        _at(12, 2, 8, 45): ["2024-11-29", "2024-12-02"],  # Friday's with the weekend's headlines
        _at(12, 2, 20, 0): ["2024-12-02"],
    }


def test_the_holiday_and_the_weekend_skip_with_the_reason(schedule: dg.ScheduleDefinition) -> None:
    for tick, why in (
        (datetime(2024, 11, 28, 8, 45, tzinfo=NY), "2024-11-28 is not a trading day"),
        (datetime(2024, 11, 30, 20, 0, tzinfo=NY), "2024-11-30 is not a trading day"),  # a Saturday (cron never ticks it)
        (datetime(2024, 11, 29, 11, 0, tzinfo=NY), "is not a news_schedule time"),
    ):
        data = _evaluate(schedule, tick)
        assert isinstance(data, ScheduleExecutionData) and not data.run_requests
        assert data.skip_message is not None and why in data.skip_message


def test_every_session_is_fetched_after_its_window_closed(fired: dict[datetime, list[str]]) -> None:
    """Nothing is lost: each session's partition (22nd..29th) has a run at a tick past its window's end,
    so the night, the holiday and the weekend after it are in the lake, whole."""
    runs: dict[str, list[datetime]] = {}
    for tick, keys in fired.items():
        for key in keys:
            runs.setdefault(key, []).append(tick.replace(tzinfo=NY))
    for key in ("2024-11-22", "2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29"):
        window = NewsWindow.of(key)
        assert any(t >= window.end for t in runs[key]), f"{key}: never fetched after its window ({window.end}) closed"
        assert all(t > window.start for t in runs[key]), f"{key}: fetched before its day began"


def test_the_first_tick_runs_the_job_for_the_previous_session_complete(schedule: dg.ScheduleDefinition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the job users run: Monday 08:45's request for Friday's partition writes Friday's headlines,
    the weekend's included (the offline generator), with the run's clock at the tick."""
    from orchestration.definitions import defs

    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,MSFT")
    tick = datetime(2024, 12, 2, 8, 45, tzinfo=NY)
    data = _evaluate(schedule, tick)
    assert isinstance(data, ScheduleExecutionData) and data.run_requests
    friday = data.run_requests[0]
    assert friday.partition_key == "2024-11-29"
    resources = {"lake": LakeResource(root=str(tmp_path)), "news_source": NewsResource(seed=7)}
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("ingest_news_job").execute_in_process(
            partition_key=friday.partition_key, instance=instance, resources=resources, tags={"quantlake/now": tick.isoformat()}
        )
    assert result.success
    window = NewsWindow.of("2024-11-29")
    stored = read_news(tmp_path, ["AAPL", "MSFT"], until=window.end, lookback=window.end - window.start)
    assert stored.height > 0 and (stored["created_at"] >= window.start).all() and (stored["created_at"] < window.end).all()


def test_news_times_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_NEWS_TIMES", "07:30, 18:00")
    assert [t.isoformat(timespec="minutes") for t in news_times()] == ["07:30", "18:00"]
    assert sorted(build_news_schedule().cron_schedule) == ["0 18 * * 1-5", "30 7 * * 1-5"]
    monkeypatch.setenv("QUANTLAKE_NEWS_TIMES", "8.45")
    with pytest.raises(ValueError, match="QUANTLAKE_NEWS_TIMES"):
        news_times()
