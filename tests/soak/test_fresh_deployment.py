"""What the soak found on a deployment's first day, each pinned on its own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import time_machine

from assets.clock import run_now


def test_the_price_move_sensor_skips_on_an_empty_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.definitions import defs

    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(tmp_path / "lake"))  # nothing ingested yet
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL")
    sensor = defs.resolve_sensor_def("price_move_sensor")
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()))
    assert not result.run_requests and "no bars in the lake yet" in (result.skip_message or "")


@pytest.mark.parametrize("tag", [".dagster/scheduled_execution_time", "dagster/scheduled_execution_time"])
def test_a_scheduled_run_decides_as_of_its_tick_whichever_tag_carries_it(tag: str) -> None:
    """The daemon's scheduler writes the hidden `.dagster/` tag; a run it launches late still uses its tick."""
    seen: list[datetime] = []

    @dg.op
    def now(context) -> None:  # type: ignore[no-untyped-def]  # Dagster reads the annotation; strings fail
        seen.append(run_now(context))

    @dg.job
    def clocked() -> None:
        now()

    with time_machine.travel(datetime(2026, 11, 27, 18, 9, tzinfo=UTC), tick=False):  # four minutes late
        assert clocked.execute_in_process(tags={tag: "2026-11-27T13:05:00-05:00"}).success
    assert seen == [datetime(2026, 11, 27, 18, 5, tzinfo=UTC)]
