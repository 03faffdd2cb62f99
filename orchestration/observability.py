"""Structured logs (structlog): console by default, JSON with QUANTLAKE_LOG_FORMAT=json.

Every line carries the bound context (run id, partition, trace id) and secrets never get through:
values of the key variables in the environment are masked in every event, whatever the field.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

SECRET_ENV_VARS = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "OPENAI_API_KEY", "DAGSTER_PG_URL", "QUANTLAKE_ALERT_WEBHOOK")
MASK = "***"


def _secrets() -> list[str]:
    return [v for name in SECRET_ENV_VARS if len(v := os.environ.get(name, "")) >= 6]


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    secrets = _secrets()
    if not secrets:
        return event
    for key, value in list(event.items()):
        text = value if isinstance(value, str) else None
        if text is None:
            continue
        for secret in secrets:
            text = text.replace(secret, MASK)
        event[key] = text
    return event


def configure_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    fmt = (fmt or os.environ.get("QUANTLAKE_LOG_FORMAT", "console")).lower()
    if fmt not in {"console", "json"}:
        raise ValueError(f"QUANTLAKE_LOG_FORMAT={fmt!r}: expected console or json")
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
    handler = logging.StreamHandler(sys.stderr)
    # Library code logs through stdlib logging; this formats those lines the same way.
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger("quantlake")
    root.handlers = [handler]
    root.setLevel(level)
    root.propagate = False
    for name in ("lake", "trading", "backtests"):
        lib = logging.getLogger(name)
        lib.handlers = [handler]
        lib.setLevel(level)
        lib.propagate = False


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
    for name in ("quantlake", "lake", "trading", "backtests"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    structlog.reset_defaults()
