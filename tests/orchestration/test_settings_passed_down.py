"""The assets' settings come from orchestration: the partitions a loaded code location uses, the
screener's filters at a run, and nothing when orchestration has passed nothing down."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, time
from pathlib import Path

import dagster as dg
import pytest

from assets import partitions
from assets import screener as screener_module
from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.calendar import get_calendar
from orchestration.settings import SettingsError, pass_settings_down

ROOT = Path(__file__).resolve().parents[2]

LOAD = """
import json
from orchestration.definitions import defs
job = defs.resolve_job_def("ingest_intraday_job").partitions_def
[day] = [d.partitions_def for d in job.partitions_defs if d.name == "date"]
from assets.partitions import daily_partitions, universe
[year] = [d.partitions_def for d in daily_partitions.partitions_defs if d.name == "year"]
print(json.dumps({"first_day": day.get_first_partition_key(), "timezone": day.timezone,
                  "first_year": year.get_first_partition_key(), "universe": universe()}))
"""


def test_a_loaded_code_location_partitions_from_the_settings_it_was_given(tmp_path: Path) -> None:
    """A fresh process, as `dagster dev` or a step worker loads orchestration.definitions."""
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "GX_ANALYTICS_ENABLED": "false",
        "QUANTLAKE_PARTITION_START": "2023-03-01", "QUANTLAKE_EXCHANGE": "XLON", "QUANTLAKE_UNIVERSE": "tsla, aapl,TSLA",
    }
    done = subprocess.run([sys.executable, "-c", LOAD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"first_day": "2023-03-01", "timezone": "Europe/London", "first_year": "2023", "universe": ["AAPL", "TSLA"]}


def test_a_bad_partition_start_is_named_when_the_partitions_ask_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_PARTITION_START", "2024-13-01")
    with pytest.raises(SettingsError, match=r"QUANTLAKE_PARTITION_START='2024-13-01': Value error, not a date \(YYYY-MM-DD\)"):
        partitions.current_settings()
    monkeypatch.setenv("QUANTLAKE_PARTITION_START", " 2024-02-01 ")
    monkeypatch.setenv("QUANTLAKE_SEED", "seven")  # an unrelated bad value does not fail the partitions
    assert partitions.current_settings().start == date(2024, 2, 1)


def test_without_orchestration_the_assets_have_no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No silent defaults below orchestration: a universe or filters that never arrived fail by name."""
    monkeypatch.setattr(partitions, "_source", None)
    monkeypatch.setattr(screener_module, "_source", None)
    with pytest.raises(RuntimeError, match="import orchestration first"):
        partitions.universe()
    with pytest.raises(RuntimeError, match="import orchestration first"):
        screener_module.screener_settings()
    pass_settings_down()  # what importing orchestration does
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "nvda")
    monkeypatch.setenv("QUANTLAKE_SCREENER", "yes")
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_PRICE", "250")
    assert partitions.universe() == ["NVDA"]
    assert screener_module.screener_settings().enabled and screener_module.screener_settings().rules.max_price == 250


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QUANTLAKE_SCREENER_LOOKBACK", "a month", "QUANTLAKE_SCREENER_LOOKBACK='a month': Input should be a valid number"),
        ("QUANTLAKE_SCREENER_MIN_PRICE", "500", "screener: min_price"),  # above the max price: ScreenerRules refuses
    ],
)
def test_a_bad_screener_filter_fails_the_run_once_naming_it(name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_PRICE", "100")
    monkeypatch.setenv(name, value)
    day = date(2024, 6, 4)
    now = datetime.combine(day, time(11, 0), tzinfo=get_calendar().tz)
    result = dg.materialize(
        [screener_module.screener], resources={"lake": LakeResource(root=str(tmp_path)), "trading": TradingResource()}, partition_key=day.isoformat(),
        tags={NOW_TAG: now.isoformat()}, raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.event_specific_data.error  # type: ignore[union-attr]
    assert message in str(error)
    assert len(result.filter_events(lambda e: e.event_type_value == "STEP_RESTARTED")) == 0  # never retried
