"""A week of the deployment left alone (Thanksgiving and its half day included), as the daemon runs it.

`make soak` runs the longer windows (scripts/soak.py); this is the short one.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from tests.soak.checks import NY, check_all, scheduled_at, sessions
from tests.soak.harness import SoakSettings, run_soak


@pytest.mark.slow
def test_a_week_unattended(tmp_path: Path) -> None:
    # Mon 2026-11-23 .. Sun 11-29: Thursday is a holiday, Friday closes at 13:00.
    # The code location restarts twice (the day before the holiday, and the half day).
    reloads = (date(2026, 11, 25), date(2026, 11, 27))
    result = run_soak(SoakSettings(start=date(2026, 11, 23), end=date(2026, 11, 29), work=tmp_path, reload_on=reloads))
    assert result.reloads == 2
    stats, problems = check_all(result)
    assert problems == [], "\n".join(problems)
    assert date(2026, 11, 26) not in sessions(result) and stats["sessions"] == 4
    assert int(str(stats["runs"])) >= 4 * 10  # 3 opens + 3 closes + 2-3 decisions + flatten + report a session, and sensors
    assert result.launched == len(result.runs)  # nothing old enough for retention to delete in a week
    assert result.events > 20 * len(result.runs)  # every run's start, steps, checks and end reached the instance
    assert list(result.cpu_by_week) == [date(2026, 11, 23)] and 0 < result.cpu_by_week[date(2026, 11, 23)] <= result.cpu_seconds
    eod = [scheduled_at(r).astimezone(NY) for r in result.runs if r.job_name == "end_of_day_job"]
    assert [t for t in eod if t.day == 27] == [datetime(2026, 11, 27, 13, 5, tzinfo=NY)]  # the half day's close
    print(stats)


@pytest.mark.slow
def test_the_data_source_down_for_a_session(tmp_path: Path) -> None:
    """Tuesday's source is down all day: its ingests fail with the source's error, are retried by the
    run-retries daemon and alerted; trading goes on; Wednesday's open recovers Tuesday's daily bar.
    Tuesday's 1-minute bars stay missing: nothing in the deployment fetches a missed session again."""
    down = date(2026, 11, 24)
    result = run_soak(SoakSettings(start=date(2026, 11, 23), end=date(2026, 11, 25), work=tmp_path, source_down=(down,)))
    stats, problems = check_all(result)
    gap = sorted(
        [f"bars_1m {down}|{s}: materialized 0 times" for s in result.settings.symbols]
        + [f"1m bars {down} {s}: none in the lake" for s in result.settings.symbols]
    )
    assert sorted(problems) == gap
    assert stats["retries"] == 2 * 6  # 3 opens + 3 closes, each retried twice
    assert int(str(stats["alerts"])) >= 6 * 3  # every failed run alerted
    decisions = [r for r in result.runs if r.job_name == "decide_job" and r.tags.get("dagster/schedule_name")]
    assert {scheduled_at(r).astimezone(NY).date() for r in decisions} == {date(2026, 11, 23), down, date(2026, 11, 25)}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_sessions_on_a_postgresql_instance(tmp_path: Path, pg_schema_url: str) -> None:
    result = run_soak(SoakSettings(start=date(2026, 11, 23), end=date(2026, 11, 24), work=tmp_path, storage_url=pg_schema_url))
    stats, problems = check_all(result)
    assert problems == [], "\n".join(problems)
    assert stats["sessions"] == 2 and int(str(stats["runs"])) >= 2 * 10


@pytest.mark.slow
def test_the_broker_answering_503_to_every_order_for_a_day(tmp_path: Path) -> None:
    """Friday 2026-11-13 the strategy buys NVDA (sma_cross 5/20 crosses on the 12th); every submission
    that day is taken by the venue but answered 503. The ledger records an unknown outcome, the order
    is never confirmed twice nor sent under a new id, its fill (Monday's bar, in the lake Tuesday)
    reaches the ledger, and the ledger's replay is the account."""
    bad = date(2026, 11, 13)
    result = run_soak(SoakSettings(start=date(2026, 11, 12), end=date(2026, 11, 17), work=tmp_path, broker_5xx=(bad,)))
    stats, problems = check_all(result)
    assert problems == [], "\n".join(problems)
    assert int(str(stats["unknown_outcomes"])) >= 1 and int(str(stats["fills"])) >= 1
    assert all(r.status.value == "SUCCESS" for r in result.runs if r.job_name == "decide_job")  # trading went on
