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
    result = run_soak(SoakSettings(start=date(2026, 11, 23), end=date(2026, 11, 29), work=tmp_path))
    stats, problems = check_all(result)
    assert problems == [], "\n".join(problems)
    assert date(2026, 11, 26) not in sessions(result) and stats["sessions"] == 4
    assert int(str(stats["runs"])) >= 4 * 10  # 3 opens + 3 closes + 2-3 decisions + flatten + report a session, and sensors
    eod = [scheduled_at(r).astimezone(NY) for r in result.runs if r.job_name == "end_of_day_job"]
    assert [t for t in eod if t.day == 27] == [datetime(2026, 11, 27, 13, 5, tzinfo=NY)]  # the half day's close
    print(stats)
