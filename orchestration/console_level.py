"""Dagster's console logger at QUANTLAKE_LOG_LEVEL: a run's DEBUG lines on stderr only when asked for.

Every run whose config names no logger (schedules, sensors, the launchpad, `execute_in_process`, the
soak's in-process runs) prints through `colored_console_logger` at DEBUG: each step's start, outputs,
check evaluations and materializations, a line each (a simulated year: 15.5 MB of stderr). Dagster's
own switch, the instance's `python_logs.python_log_level`, also drops the runs' debug and info
messages from the event log (the UI's run logs). Here only the console is leveled: the one factory
`colored_console_logger` calls at each run start (`dagster._loggers.create_console_logger`, Dagster
1.13, as `observability.quiet_console_in_json_mode`) is wrapped so the logger's level is the more
severe of what Dagster asked for and QUANTLAKE_LOG_LEVEL, read at each run start. Unset (or not a
level): Dagster's own. The event log keeps every event and message whatever the level, and warnings
and errors print at any level up to WARNING.
"""

from __future__ import annotations

import logging

from orchestration.settings import SettingsError, settings

_MARK = "_quantlake_level"


def configured_level() -> int | None:
    """QUANTLAKE_LOG_LEVEL as a logging level, read now; None when unset or not a level (a run's
    logging never fails for it: `observability.configure_logging` names a bad value)."""
    try:
        value = settings(only=("QUANTLAKE_LOG_LEVEL",)).log_level
    except SettingsError:
        return None
    level = logging.getLevelName(value.upper()) if value is not None else None
    return level if isinstance(level, int) else None


def console_at_configured_level() -> None:
    """Wraps Dagster's console logger factory (idempotent: once per process, kept across reloads of
    our modules, as the factory belongs to Dagster's). Any wrapper already there stays inside."""
    from dagster import _loggers
    from dagster._core.utils import coerce_valid_log_level

    inner = _loggers.create_console_logger
    if getattr(inner, _MARK, False):
        return

    def create_console_logger(name: str, level: str | int) -> logging.Logger:
        floor = configured_level()
        return inner(name, level if floor is None else max(coerce_valid_log_level(level), floor))

    create_console_logger.__dict__.update(inner.__dict__)  # the JSON-mode wrapper's own mark, if inside
    setattr(create_console_logger, _MARK, True)
    _loggers.create_console_logger = create_console_logger
