"""Metrics a monitoring stack can scrape (Prometheus text format), collected at scrape time.

The collector reads what already records everything — the Dagster instance (runs, durations, data
fallbacks in materialization metadata) and, when given, the decision ledger (orders, fills, limit
violations, agent latency) — so no code path has to remember to bump a counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LedgerCounts = Callable[[], dict[str, float]]


class DagsterRunCollector(Collector):
    """Run counts by job and status, and the duration of the most recent run of each job."""

    def __init__(self, instance: dg.DagsterInstance, recent_runs: int = 500) -> None:
        self.instance = instance
        self.recent_runs = recent_runs

    def collect(self) -> Iterable[Metric]:
        runs = self.instance.get_run_records(limit=self.recent_runs)
        counts: Counter[tuple[str, str]] = Counter()
        last_duration: dict[str, float] = {}
        for record in runs:  # newest first
            run = record.dagster_run
            counts[(run.job_name, run.status.value)] += 1
            if run.job_name not in last_duration and record.start_time and record.end_time:
                last_duration[run.job_name] = record.end_time - record.start_time
        total = CounterMetricFamily("quantlake_runs", "Dagster runs by job and status (recent window)", labels=["job", "status"])
        for (job, status), n in sorted(counts.items()):
            total.add_metric([job, status], n)
        yield total
        duration = GaugeMetricFamily("quantlake_cycle_duration_seconds", "Duration of the last run of each job", labels=["job"])
        for job, seconds in sorted(last_duration.items()):
            duration.add_metric([job], seconds)
        yield duration


class LedgerCollector(Collector):
    """Counters from the decision ledger, e.g. orders, fills, limit violations, fallbacks."""

    def __init__(self, counts: LedgerCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.counts().items()):
            family = CounterMetricFamily(f"quantlake_{name}", f"Ledger count of {name.replace('_', ' ')}")
            family.add_metric([], value)
            yield family


def build_registry(instance: dg.DagsterInstance, ledger_counts: LedgerCounts | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DagsterRunCollector(instance))
    if ledger_counts is not None:
        registry.register(LedgerCollector(ledger_counts))
    return registry


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Starts the scrape endpoint in a background thread; returns (server, thread)."""
    return start_http_server(port, addr=addr, registry=registry)
