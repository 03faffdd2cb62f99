"""Assets materialized in process for the command line and the demo: a progress bar fed by the run's
own log, and a failure told in a line or two instead of Dagster's stack trace.

The run is the same as `dg.materialize` (same instance, so the UI shows it); only the console logger
is replaced: the step's `context.log` lines drive the bar ("sweep 12/90" sets it to 12 of 90), and
nothing is printed for a failure, which is raised as `RunFailed` with the user's error at its root.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._utils.error import SerializableErrorInfo
from tqdm import tqdm

from backtests.engine import BacktestError
from lake.errors import LakeError
from trading.execution import ExecutionError

JOB = "__quantlake_cli_job__"
_COUNT = re.compile(r"(?<![\w./-])(\d+)/(\d+)(?![\w./-])")
# Bad input, not a bug: exceptions of these families (raised in a step, they reach us by class name).
EXPECTED: tuple[type[BaseException], ...] = (ValueError, LakeError, BacktestError, ExecutionError, FileNotFoundError, dg.Failure)


def _subclass_names(bases: Sequence[type[BaseException]]) -> set[str]:
    seen: set[str] = set()
    todo = list(bases)
    while todo:
        cls = todo.pop()
        if cls.__name__ not in seen:
            seen.add(cls.__name__)
            todo.extend(cls.__subclasses__())
    return seen


class RunFailed(Exception):
    """A run whose step failed: `message` is the user's error (first lines), `expected` says whether
    it is bad input (exit 2) rather than a bug (exit 1); `details` has the full error with its trace."""

    def __init__(self, what: str, message: str, run_id: str, *, expected: bool, details: str = "") -> None:
        super().__init__(f"{what}: {message}")
        self.what, self.message, self.run_id, self.expected, self.details = what, message, run_id, expected, details


def root_error(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """The exception the asset raised, under Dagster's step-execution and retry wrappers."""
    while error.cause is not None and (error.cls_name or "").startswith(("Dagster", "RetryRequested")):
        error = error.cause  # "Exceeded max_retries of 3" is a RetryRequestedFromPolicy caused by the error
    return error


def short_message(error: SerializableErrorInfo, lines: int = 2) -> str:
    """The error's own text without the module-qualified class prefix, at most `lines` lines."""
    text = error.message.strip()
    head, sep, rest = text.partition(": ")
    if sep and head.split(".")[-1] == error.cls_name:
        text = rest
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("For further information")]
    return "; ".join(kept[:lines]) or error.cls_name or "error"


def failed_checks(result: dg.ExecuteInProcessResult) -> str:
    """The blocking checks that failed, with their row counts: 'in_session (1 row), price_jump (2 rows)'."""
    named = []
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        rows = evaluation.metadata.get("failed_rows")
        count = rows.value if rows is not None else None
        named.append(f"{evaluation.asset_check_key.name} ({count} row{'' if count == 1 else 's'})" if isinstance(count, int) else evaluation.asset_check_key.name)
    return ", ".join(named)


def step_failure(result: dg.ExecuteInProcessResult) -> RunFailed | None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = root_error(event.step_failure_data.error)
            expected = (error.cls_name or "") in _subclass_names(EXPECTED)
            message = short_message(error)
            if "blocking asset check" in error.message and (checks := failed_checks(result)):
                # Dagster's own text names the check only; say what failed and where the rows went.
                message = f"validation failed: {checks}; those rows are in the lake's quarantine with their reasons (UI: the asset's checks)"
            return RunFailed(event.step_key or "run", message, result.run_id, expected=expected, details=event.step_failure_data.error.to_string())
    if not result.success:
        return RunFailed("run", "failed without a step failure", result.run_id, expected=False)
    return None


class RunProgress:
    """A bar on stderr that counts what the step logs as "done/total", else shows the time elapsed."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        # enabled=None: only on a terminal
        disable = (not sys.stderr.isatty()) if enabled is None else not enabled
        self.bar = tqdm(desc=label, disable=disable, file=sys.stderr, leave=False, bar_format="{desc}: {elapsed}")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self.bar.refresh()

    def seen(self, message: str) -> None:
        match = _COUNT.search(message)
        if match is None:
            return
        done, total = int(match[1]), int(match[2])
        if total > 0 and done <= total:
            if self.bar.total != total:
                self.bar.total = total
                self.bar.bar_format = "{desc}: {percentage:3.0f}%|{bar:24}| {n}/{total} [{elapsed}<{remaining}]"
            self.bar.n = done
            self.bar.refresh()

    def __enter__(self) -> RunProgress:
        if not self.bar.disable:
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self.bar.close()


def _progress_logger(progress: RunProgress) -> dg.LoggerDefinition:
    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            meta = getattr(record, "dagster_meta", None)
            message = meta.get("orig_message") if isinstance(meta, dict) else None
            progress.seen(str(message if message is not None else record.getMessage()))

    @dg.logger(config_schema={}, description="Feeds the command line's progress bar from the run's log lines.")
    def progress_logger(_: dg.InitLoggerContext) -> logging.Logger:
        log = logging.Logger("quantlake.progress", level=logging.INFO)
        log.addHandler(Handler())
        return log

    return progress_logger


def materialize(
    assets: Sequence[dg.AssetsDefinition],
    *,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    config: Mapping[str, Mapping[str, Any]],
    label: str,
    progress: bool | None = None,
    debug: bool = False,
    tags: Mapping[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materializes `assets` (op name -> run config in `config`) in one run on `instance`; raises
    `RunFailed` when a step fails. `debug` keeps Dagster's console log (with its stack traces)."""
    bar = RunProgress(label, progress)
    loggers: dict[str, dg.LoggerDefinition] = {"progress": _progress_logger(bar)}
    run_config: dict[str, Any] = {"ops": {op: {"config": dict(c)} for op, c in config.items()}, "loggers": {"progress": {}}}
    if debug:
        loggers["console"] = dg.colored_console_logger
        run_config["loggers"]["console"] = {"config": {"log_level": "DEBUG"}}
    defs = dg.Definitions(jobs=[dg.define_asset_job(JOB)], assets=assets, resources=resources, loggers=loggers)
    with bar:
        result = defs.resolve_job_def(JOB).execute_in_process(run_config=run_config, instance=instance, raise_on_error=False, tags=tags)
    failure = step_failure(result)
    if failure is not None:
        raise failure
    return result
