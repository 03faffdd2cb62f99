"""A run in process prints Dagster's console lines at QUANTLAKE_LOG_LEVEL (orchestration/console_level.py):
no DEBUG event lines at INFO, warnings and errors still printed, everything still in the event log."""

import re

import dagster as dg
import pytest
from dagster import _loggers

from orchestration.console_level import console_at_configured_level

MESSAGES = {level: f"noisy says {level.lower()}" for level in ("DEBUG", "INFO", "WARNING", "ERROR")}


@dg.asset
def noisy(context: dg.AssetExecutionContext) -> None:
    context.log.debug(MESSAGES["DEBUG"])
    context.log.info(MESSAGES["INFO"])
    context.log.warning(MESSAGES["WARNING"])
    context.log.error(MESSAGES["ERROR"])


@pytest.fixture(autouse=True)
def leveled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The factory wrapped for this test only (monkeypatch puts Dagster's back afterwards)."""
    monkeypatch.setattr(_loggers, "create_console_logger", _loggers.create_console_logger)
    monkeypatch.delenv("QUANTLAKE_LOG_FORMAT", raising=False)  # console lines, not JSON
    console_at_configured_level()


def run_noisy(capfd: pytest.CaptureFixture[str]) -> tuple[set[str], list[str], dg.DagsterInstance, str]:
    """The console's levels and lines of one in-process run of `noisy`, its instance and run id."""
    instance = dg.DagsterInstance.ephemeral()
    capfd.readouterr()
    result = dg.materialize([noisy], instance=instance)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if " - dagster - " in line]
    return set(re.findall(r" - dagster - ([A-Z]+) - ", err)), lines, instance, result.run_id


ALL = {"DEBUG", "INFO", "WARNING", "ERROR"}


@pytest.mark.parametrize(
    ("level", "printed"),
    [
        ("DEBUG", ALL),
        ("INFO", {"INFO", "WARNING", "ERROR"}),
        ("warning", {"WARNING", "ERROR"}),
        ("ERROR", {"ERROR"}),
        (None, ALL),  # unset: Dagster's own level (DEBUG)
    ],
)
def test_a_runs_console_lines_follow_quantlake_log_level(
    level: str | None, printed: set[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    if level is None:
        monkeypatch.delenv("QUANTLAKE_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("QUANTLAKE_LOG_LEVEL", level)
    levels, lines, instance, run_id = run_noisy(capfd)
    assert levels == printed
    assert any("STEP_START" in line for line in lines) == ("DEBUG" in printed)  # Dagster's event lines
    for name, message in MESSAGES.items():
        assert any(message in line for line in lines) == (name in printed), name
    # Only the console is leveled: the event log (the UI's run logs) keeps every message and event.
    stored = [entry.user_message for entry in instance.all_logs(run_id)]
    assert set(MESSAGES.values()) <= set(stored)
    assert any(entry.dagster_event_type == dg.DagsterEventType.STEP_START for entry in instance.all_logs(run_id))


def test_a_step_failure_still_prints_at_warning(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    @dg.asset
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setenv("QUANTLAKE_LOG_LEVEL", "WARNING")
    capfd.readouterr()
    dg.materialize([broken], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    err = capfd.readouterr().err
    assert re.search(r" - dagster - ERROR - .* - STEP_FAILURE - .*broken on purpose", err, re.DOTALL), err
    assert " - dagster - DEBUG - " not in err


def test_the_wrapper_is_installed_once(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    installed = _loggers.create_console_logger
    console_at_configured_level()
    assert _loggers.create_console_logger is installed
    monkeypatch.setenv("QUANTLAKE_LOG_LEVEL", "nonsense")  # not a level: Dagster's own, the run does not fail
    levels, _, _, _ = run_noisy(capfd)
    assert levels == ALL


def test_a_run_config_asking_for_less_is_kept(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """The more severe of the two: a run whose config sets the console at WARNING stays there at DEBUG."""
    monkeypatch.setenv("QUANTLAKE_LOG_LEVEL", "DEBUG")
    capfd.readouterr()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    dg.materialize([noisy], instance=dg.DagsterInstance.ephemeral(), run_config=quiet)
    assert set(re.findall(r" - dagster - ([A-Z]+) - ", capfd.readouterr().err)) == {"WARNING", "ERROR"}
