"""The instance `make ui` / `make demo` use watches its runs: run monitoring and run retries on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from orchestration.home import DEFAULT_INSTANCE, ensure_dagster_home

ROOT = Path(__file__).resolve().parents[2]


def _load(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def _assert_watched(instance: dg.DagsterInstance) -> None:
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_monitoring_max_resume_run_attempts == 0  # the default launcher cannot resume
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.telemetry_enabled
    assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"  # the launcher the settings are for
    sensor_ticks = instance.get_tick_retention_settings(InstigatorType.SENSOR)
    assert sensor_ticks[TickStatus.SKIPPED] == 7 and sensor_ticks[TickStatus.SUCCESS] == 90  # ticks do not pile up
    assert instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SKIPPED] == 90


def test_the_quantlake_commands_write_the_default_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.cli import _ensure_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    home = _ensure_dagster_home()
    assert (home / "dagster.yaml").read_text() == DEFAULT_INSTANCE.read_text()
    with _load(home) as instance:
        _assert_watched(instance)


def test_make_uis_preparation_writes_it_too_and_upgrades_the_old_generated_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what `make demo` wrote before
    recipe = (ROOT / "Makefile").read_text().split("\nui:", 1)[1]
    assert "-m orchestration.home" in recipe.split("\n\n", 1)[0]  # the command `make ui` runs before dagster dev
    subprocess.run([sys.executable, "-m", "orchestration.home"], cwd=ROOT, env={"DAGSTER_HOME": str(home), "PATH": ""}, check=True)
    with _load(home) as instance:
        _assert_watched(instance)


def test_a_users_own_dagster_yaml_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = "run_retries:\n  enabled: false\ntelemetry:\n  enabled: false\n"
    (tmp_path / "dagster.yaml").write_text(mine)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    ensure_dagster_home()
    assert (tmp_path / "dagster.yaml").read_text() == mine
    with _load(tmp_path) as instance:
        assert not instance.run_retries_enabled
