"""The executor, chosen by QUANTLAKE_EXECUTOR: multiprocess (default), in_process, celery or k8s.

Celery and Kubernetes are Dagster's own distributed executors; their configs live in deploy/.
Celery is configured from the environment, not from each run's config: QUANTLAKE_CELERY_BROKER
(e.g. redis://127.0.0.1:6379/0; also the result backend unless QUANTLAKE_CELERY_BACKEND is set).
The workers must use the same broker, backend and queue as the runs, or steps wait forever; they
read deploy/celery/workers.yaml, which a test keeps equal to `celery_config()`.
A worker's own lines are JSON in JSON mode too (`json_logs_in_celery_workers`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import dagster as dg

from orchestration.observability import configure_logging, get_logger, json_mode
from orchestration.settings import settings

BROKER_ENV = "QUANTLAKE_CELERY_BROKER"
BACKEND_ENV = "QUANTLAKE_CELERY_BACKEND"
EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")


def celery_config() -> dict[str, Any]:
    """dagster-celery's executor config: broker and backend by environment variable (the URL may
    hold a password, so it never lands in a run's stored config), one task at a time per worker
    process so chunks spread over workers instead of queueing behind a busy one. Tasks are
    acknowledged on receipt (Celery's default): a worker that dies loses its step (the run fails and
    run retries take over) rather than a step that may have sent orders running twice."""
    return {
        "broker": {"env": BROKER_ENV},
        "backend": {"env": BACKEND_ENV if settings().celery_backend else BROKER_ENV},
        "include": ["orchestration.definitions"],
        # Celery's `imports`: a worker imports this module first thing, so its JSON-mode hooks
        # (json_logs_in_celery_workers) are in place before its first line; `include` comes later.
        "config_source": {"worker_prefetch_multiplier": 1, "imports": [__name__]},
    }


def build_executor() -> dg.ExecutorDefinition:
    env = settings()
    choice = env.executor
    if choice == "multiprocess":
        return dg.multiprocess_executor
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "celery":
        from dagster_celery import celery_executor

        if not env.celery_broker:
            raise ValueError(f"QUANTLAKE_EXECUTOR=celery needs {BROKER_ENV} (e.g. redis://127.0.0.1:6379/0), the broker the workers listen to")
        return celery_executor.configured(celery_config(), name="celery")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"QUANTLAKE_EXECUTOR={choice!r}: expected {', '.join(EXECUTORS)}")


def json_logs_in_celery_workers() -> None:
    """In JSON mode (QUANTLAKE_LOG_FORMAT=json), a Celery worker writes JSON lines only: its start,
    connection, tasks received and done, warnings (the superuser one included) and the steps' lines.

    Through Celery's own signals: the worker's logging is ours from its first moment (`celeryd_init`,
    before its privilege check warns), its every logger goes through our handler (`setup_logging`:
    Celery then configures none, in the main process and in each pool process), its text banner is one
    JSON line instead, and a SIGTERM's warm shutdown is a JSON line, not the text Celery prints. In
    console mode nothing is connected: Celery's lines stay Celery's. Connected below when this module
    is imported in a process that has imported Celery: a worker imports it first thing (Celery's
    `imports` in `celery_config`, deploy/celery/workers.yaml), before any of those signals fire;
    elsewhere they never fire.
    """
    if not json_mode():
        return
    from celery import signals

    for signal, receiver in ((signals.celeryd_init, _worker_init), (signals.setup_logging, _setup_logging),
                             (signals.celeryd_after_setup, _worker_started), (signals.worker_ready, _worker_ready),
                             (signals.worker_shutting_down, _worker_shutting_down)):
        signal.connect(receiver, weak=False, dispatch_uid=f"quantlake.{receiver.__name__}")


def _setup_logging(**_: Any) -> None:
    configure_logging(fmt="json", whole_process=True)
    # The pool's own logger (a pool process's exit, say) does not propagate to the root: Celery gives it
    # the root's handler, at ERROR (its mmap chatter is INFO), when it configures logging itself.
    from celery.utils.log import get_multiprocessing_logger

    pool_logger = get_multiprocessing_logger()
    pool_logger.handlers = list(logging.getLogger().handlers)
    pool_logger.setLevel(logging.ERROR)


def _worker_init(**_: Any) -> None:
    _setup_logging()


def _worker_started(sender: str, instance: Any, **_: Any) -> None:
    instance.quiet = True  # no text banner (printed right after this signal): this line instead
    get_logger("quantlake.celery").info("celery worker started", worker=sender, banner=instance.startup_info(artlines=False).strip())


def _worker_ready(sender: Any, **_: Any) -> None:
    from celery.apps.worker import install_worker_term_handler

    if sender.controller is not None:  # SIGTERM's handler again, without its text line (see _worker_shutting_down)
        install_worker_term_handler(sender.controller, verbose=False)


def _worker_shutting_down(sender: str, sig: str, how: str, exitcode: int, **_: Any) -> None:
    get_logger("quantlake.celery").info("celery worker shutting down", worker=sender, signal=sig, how=how, exitcode=exitcode)


if "celery" in sys.modules:
    json_logs_in_celery_workers()
