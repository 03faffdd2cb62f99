"""The executor, chosen by QUANTLAKE_EXECUTOR: multiprocess (default), in_process, celery or k8s.

Celery and Kubernetes are Dagster's own distributed executors; their run config lives in deploy/.
"""

from __future__ import annotations

import os

import dagster as dg


def build_executor() -> dg.ExecutorDefinition:
    choice = os.environ.get("QUANTLAKE_EXECUTOR", "multiprocess").lower()
    if choice == "multiprocess":
        return dg.multiprocess_executor
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "celery":
        from dagster_celery import celery_executor

        return celery_executor
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"QUANTLAKE_EXECUTOR={choice!r}: expected multiprocess, in_process, celery or k8s")
