"""Structured logs (structlog): console by default, JSON with QUANTLAKE_LOG_FORMAT=json.

Every line carries the bound context (run id, partition, trace id) and secrets never get through:
values of the key variables in the environment are masked in every event, whatever the field.
Dagster's own lines (`context.log`, run and step events) get the same JSON shape and ids through
`DagsterJsonHandler`, a handler the instance installs (dagster.yaml `python_logs.dagster_handler_config`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import structlog

from orchestration.settings import SettingsError, settings

SECRET_ENV_VARS = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "OPENAI_API_KEY", "DAGSTER_PG_URL", "QUANTLAKE_ALERT_WEBHOOK")
SECRET_SUFFIXES = ("_API_KEY", "_SECRET_KEY", "_SECRET", "_TOKEN", "_PASSWORD")
MASK = "***"
LOGGERS = ("quantlake", "lake", "trading", "backtests")
WARNINGS_LOGGER = "py.warnings"  # where logging.captureWarnings sends Python warnings
MIN_SECRET = 6  # shorter values (a placeholder like "x" or "none") would mask ordinary words everywhere


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _secrets() -> list[str]:
    """Values to mask: the key variables, anything named like a key, and every *_URL with a password
    (the whole URL and the password alone, e.g. QUANTLAKE_LEDGER_URL=postgresql://u:pw@host/db).

    The one read of the environment outside orchestration/settings.py (tests/orchestration/
    test_settings.py lists it): a scan of every variable by its name, for values to hide, not a
    setting; a key a pipeline file names in api_key_env can be any variable."""
    found: list[str] = []
    for name, value in os.environ.items():
        if name in SECRET_ENV_VARS or name.endswith(SECRET_SUFFIXES):
            found.append(value)
        if name.endswith("_URL") and (password := _url_password(value)):
            found += [value, password]
    # Longest first: a URL is masked whole before its password is.
    return sorted({v for v in found if len(v) >= MIN_SECRET}, key=len, reverse=True)


def _mask(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, secrets) for v in value]
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    secrets = _secrets()
    if secrets:
        for key, value in list(event.items()):
            if not key.startswith("_"):  # structlog's own record/logger objects
                event[key] = _mask(value, secrets)
    return event


class SecretFilter(logging.Filter):
    """Masks a record before any handler sees it, ours or one a host put on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = _secrets()
        if secrets:
            if isinstance(record.msg, str):
                record.msg, record.args = _mask(record.getMessage(), secrets), ()
            elif isinstance(record.msg, dict):  # structlog's event, already redacted by the processor chain
                record.msg = _mask(record.msg, secrets)
        return True


_FILTER = SecretFilter()
_state = {"configured": False}
# configure_logging(whole_process=...): the last choice, and the root's handlers and level it replaced
_root: dict[str, Any] = {"whole_process": False, "handlers": None, "level": logging.NOTSET}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current sys.stderr (a test's capture, a daemon's redirect), not the one at setup."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(fmt: str | None = None, level: int | str | None = None, whole_process: bool | None = None) -> None:
    """Called by the CLI and by every run's resources at startup (orchestration/run_context.py).

    fmt: console | json (default QUANTLAKE_LOG_FORMAT, else console); level: QUANTLAKE_LOG_LEVEL, else INFO.
    whole_process: every logger of the process writes through our handler (it sits on the root; ours
    propagate to it), for a process that is ours whole, a Celery worker, whose library lines (celery,
    kombu) must be JSON too. Default: as this process last chose (a run's resources keep the worker's).
    """
    env = settings(only=("QUANTLAKE_LOG_FORMAT", "QUANTLAKE_LOG_LEVEL"))  # a bad value there is named
    fmt = (fmt or env.log_format).lower()
    if fmt not in {"console", "json"}:
        raise ValueError(f"QUANTLAKE_LOG_FORMAT={fmt!r}: expected console or json")
    level = level if level is not None else env.log_level or logging.INFO
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(f"QUANTLAKE_LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING or ERROR")
        level = named
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    # Library code logs through stdlib logging; this formats those lines the same way.
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    handler.addFilter(_FILTER)  # records that reach it from the root (whole_process) are masked too
    # JSON mode: a Python warning is a JSON line too (logging's py.warnings), not text on stderr.
    logging.captureWarnings(fmt == "json")
    whole = _root["whole_process"] if whole_process is None else whole_process
    for name in (*LOGGERS, WARNINGS_LOGGER):
        logger = logging.getLogger(name)
        own_line = name != WARNINGS_LOGGER or fmt == "json"
        logger.handlers = [handler] if own_line and not whole else []
        logger.filters = [_FILTER]
        logger.setLevel(level)
        # Propagation stays on: a host that logs from the root (pytest, an embedding app) still sees the
        # records; the root has no handler in our own processes (or ours alone), so nothing prints twice.
        logger.propagate = True
    _give_root_back()
    if whole:
        root = logging.getLogger()
        _root.update(handlers=list(root.handlers), level=root.level)
        root.handlers = [handler]  # ours alone: a host's handler there would print every line twice
        root.setLevel(level)
    _root["whole_process"] = whole
    _state["configured"] = True


def _give_root_back() -> None:
    """The root logger as it was before configure_logging(whole_process=True)."""
    if _root["handlers"] is not None:
        root = logging.getLogger()
        root.handlers = _root["handlers"]
        root.setLevel(_root["level"])
        _root.update(handlers=None, level=logging.NOTSET)


def cycle_id(run_id: str, job: str, tags: Mapping[str, str]) -> str:
    """What a run is one attempt at, the same for a retry or a re-execution (orchestration/run_context.py)."""
    if key := tags.get("dagster/run_key"):
        return key
    if when := tags.get("quantlake/now") or tags.get("dagster/scheduled_execution_time"):
        return f"{job}@{when}"
    return tags.get("dagster/root_run_id") or run_id


def run_ids(run_id: str, job: str, tags: Mapping[str, str]) -> dict[str, str]:
    """run_id, cycle_id, trace_id (the cycle id as 32 hex digits, W3C trace-id shape), job, partition."""
    cycle = cycle_id(run_id, job, tags)
    ids = {"run_id": run_id, "cycle_id": cycle, "trace_id": hashlib.sha256(cycle.encode()).hexdigest()[:32], "job": job}
    if partition := tags.get("dagster/partition"):
        ids["partition"] = partition
    return ids


def _dagster_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A Dagster record's own message, run ids, step and event type, from the metadata Dagster puts on it."""
    record = event.get("_record")
    meta = getattr(record, "dagster_meta", None)
    if not isinstance(meta, Mapping):
        return event
    message = str(meta.get("orig_message") or event.get("event", ""))
    full = event.get("event", "")
    event["event"] = message
    if isinstance(full, str) and message and message in full and (rest := full.split(message, 1)[1].strip()):
        event["error"] = rest  # a failure's error and stack, which Dagster appends to the line
    if run_id := meta.get("run_id"):
        event.update(run_ids(str(run_id), str(meta.get("job_name") or ""), meta.get("job_tags") or {}))
    if step := meta.get("step_key"):
        event["step"] = step
    if (dagster_event := meta.get("dagster_event")) is not None:
        kind = getattr(dagster_event, "event_type", None)  # RUN_START, not its stored value PIPELINE_START
        event["dagster_event"] = getattr(kind, "name", None) or dagster_event.event_type_value
    return event


class DagsterJsonHandler(logging.Handler):
    """Dagster's log records (`context.log`, run and step events) as JSON lines with run, cycle and trace
    ids, keys masked, on stderr, when QUANTLAKE_LOG_FORMAT=json (read at each line; in console mode it
    writes nothing: Dagster's own console logger prints them already).

    Installed by the instance: dagster.yaml `python_logs: dagster_handler_config: handlers: {json:
    {class: orchestration.observability.DagsterJsonHandler}}` (orchestration/default_instance.yaml,
    deploy/dagster.yaml, deploy/k8s/dagster.yaml). In JSON mode it is the only writer of those lines:
    Dagster's console logger is built without a handler then (`quiet_console_in_json_mode`).
    """

    def __init__(self, level: int | str = logging.NOTSET, fmt: str | None = None) -> None:
        super().__init__(level)
        self.fmt = fmt  # None: QUANTLAKE_LOG_FORMAT at each line
        chain: list[Any] = [
            _dagster_fields,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
        ]
        self.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=chain, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()]
        ))
        self.addFilter(_FILTER)

    def emit(self, record: logging.LogRecord) -> None:
        if not (self.fmt.lower() == "json" if self.fmt else json_mode()):
            return
        try:
            line = self.format(record)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # a log line must never fail a run
            self.handleError(record)


def json_mode() -> bool:
    """QUANTLAKE_LOG_FORMAT is json, read now; a bad value is not json here (a log line never fails:
    configure_logging names it)."""
    try:
        return settings(only=("QUANTLAKE_LOG_FORMAT",)).log_format == "json"
    except SettingsError:
        return False


_json_mode = json_mode


def quiet_console_in_json_mode() -> None:
    """In JSON mode Dagster's default console logger writes nothing, so stderr carries JSON lines only.

    Every run whose config names no logger (schedules, sensors, the launchpad, `materialize`) logs
    through `colored_console_logger`, which prints text. Dagster has no switch for it: a job's own
    loggers apply only when the run config names them, and a partitioned asset job drops a job-level
    default config. So the one factory it calls at each run start (`dagster._loggers.
    create_console_logger`, Dagster 1.13) is wrapped: in JSON mode it returns a logger with a
    NullHandler (no text line, and no fallback to logging's last-resort handler either); the
    instance's `DagsterJsonHandler` writes the line. Console mode is untouched. Idempotent; called
    when this module is imported, which every code location process (run worker, step process,
    daemon, CLI) does before its first run starts. tests/orchestration/test_observability.py fails
    if a Dagster upgrade moves the factory.
    """
    from dagster import _loggers

    original = _loggers.create_console_logger
    if getattr(original, "_quantlake_quiet", False):
        return

    def create_console_logger(name: str, level: str | int) -> logging.Logger:
        if not json_mode():
            return original(name, level)
        logger = logging.getLoggerClass()(name, level=level)
        logger.addHandler(logging.NullHandler())
        return logger

    create_console_logger._quantlake_quiet = True  # type: ignore[attr-defined]
    _loggers.create_console_logger = create_console_logger  # type: ignore[assignment]


quiet_console_in_json_mode()

from orchestration.console_level import console_at_configured_level  # noqa: E402  # wraps what the line above wrapped

console_at_configured_level()  # a run's Dagster console lines at QUANTLAKE_LOG_LEVEL (unset: Dagster's DEBUG)
# Dagster's beta note on the instance's yaml-defined handler (ours, above) comes at every run start,
# before a run's resources configure logging: a text line on stderr that says nothing to act on.
warnings.filterwarnings("ignore", message="Handling yaml-defined logging configuration")


def ensure_logging() -> None:
    """configure_logging from the environment unless this process already did (the CLI's choice stays)."""
    if not _state["configured"]:
        configure_logging()


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Binds run_id / partition / trace_id (or anything) to every log line inside the block."""
    tokens = structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def get_logger(name: str = "quantlake") -> Any:
    return structlog.get_logger(name)


def reset_logging() -> None:
    """Undoes configure_logging (tests, or embedding in another app's logging)."""
    logging.captureWarnings(False)
    for name in (*LOGGERS, WARNINGS_LOGGER):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.filters = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    _give_root_back()
    _root["whole_process"] = False
    structlog.reset_defaults()
    _state["configured"] = False
