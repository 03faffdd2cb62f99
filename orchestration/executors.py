"""The executor, chosen by QUANTLAKE_EXECUTOR: multiprocess (default), in_process, celery or k8s.

Celery and Kubernetes are Dagster's own distributed executors; their configs live in deploy/.
Celery is configured from the environment, not from each run's config: QUANTLAKE_CELERY_BROKER
(e.g. redis://127.0.0.1:6379/0; also the result backend unless QUANTLAKE_CELERY_BACKEND is set).
The workers must use the same broker, backend and queue as the runs, or steps wait forever; they
read deploy/celery/workers.yaml, which a test keeps equal to `celery_config()`.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

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
        "config_source": {"worker_prefetch_multiplier": 1},
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
