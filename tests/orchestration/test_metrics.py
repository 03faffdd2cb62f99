"""The Prometheus endpoint serves run counts and durations read from the Dagster instance."""

from __future__ import annotations

import urllib.request

import dagster as dg
from prometheus_client.parser import text_string_to_metric_families

from orchestration.metrics import build_registry, serve
from tests.orchestration.dagster_server import free_port


@dg.op
def ok_op() -> int:
    return 1


@dg.op
def bad_op() -> None:
    raise RuntimeError("boom")


@dg.job
def good_job() -> None:
    ok_op()


@dg.job
def bad_job() -> None:
    bad_op()


def test_scrape_reports_runs_by_job_and_status_and_ledger_counts() -> None:
    with dg.instance_for_test() as instance:
        for _ in range(2):
            good_job.execute_in_process(instance=instance)
        bad_job.execute_in_process(instance=instance, raise_on_error=False)
        registry = build_registry(instance, ledger_counts=lambda: {"orders_submitted": 3.0, "limit_violations": 1.0})
        port = free_port()
        server, thread = serve(registry, port)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        finally:
            server.shutdown()
            thread.join(timeout=5)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("quantlake_runs_total", (("job", "good_job"), ("status", "SUCCESS")))] == 2
    assert samples[("quantlake_runs_total", (("job", "bad_job"), ("status", "FAILURE")))] == 1
    assert samples[("quantlake_cycle_duration_seconds", (("job", "good_job"),))] > 0
    assert samples[("quantlake_orders_submitted_total", ())] == 3
    assert samples[("quantlake_limit_violations_total", ())] == 1
