"""What the soak reports beside its checks: the events Dagster stored, and the collector's setting inside."""

from __future__ import annotations

import gc
from datetime import date
from pathlib import Path

import dagster as dg

from tests.soak.harness import GC_THRESHOLD, SoakResult, SoakSettings, _counting_events, _fewer_collections
from tests.soak.test_lean import numbers, numbers_positive  # one tiny asset and check for both


def test_every_event_the_instance_stores_is_counted(tmp_path: Path) -> None:
    result = SoakResult(SoakSettings(start=date(2026, 11, 23), end=date(2026, 11, 23), work=tmp_path))
    with dg.DagsterInstance.ephemeral() as instance:
        with _counting_events(result):
            runs = [dg.materialize([numbers, numbers_positive], instance=instance).run_id for _ in range(2)]
        stored = sum(len(instance.all_logs(run_id)) for run_id in runs)
        dg.materialize([numbers], instance=instance)  # outside: not counted
    assert stored > 2 * 10 and result.events == stored


def test_the_collector_runs_less_often_inside_only() -> None:
    before = gc.get_threshold()
    with _fewer_collections():
        assert gc.get_threshold() == GC_THRESHOLD
    assert gc.get_threshold() == before
