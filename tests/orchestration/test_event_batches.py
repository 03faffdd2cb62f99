"""A range run's materializations reach a PostgreSQL instance as one batch (Dagster's
`DAGSTER_EVENT_BATCH_SIZE`, defaulted by `orchestration`), and the instance then shows exactly
what a SQLite instance, written event by event, shows: every partition materialized, each with
its own metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.partitions import add_symbols, intraday_key
from assets.resources import LakeResource, MarketDataResource

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
DAYS = ["2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29"]  # the 29th: a half day


def _range_run(instance: dg.DagsterInstance, lake: Path) -> dict[str, dict[str, Any]]:
    from assets.bars import bars_1m

    add_symbols(instance, ["AAPL"])
    tags = dict(zip(RANGE_TAGS, (str(intraday_key(DAYS[0], "AAPL")), str(intraday_key(DAYS[-1], "AAPL"))), strict=True))
    result = dg.materialize([bars_1m], instance=instance, resources={"lake": LakeResource(root=str(lake)), "market_data": MarketDataResource()}, tags=tags)
    assert result.success
    shown = {}
    for key in instance.get_materialized_partitions(dg.AssetKey("bars_1m")):
        [record] = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars_1m"), asset_partitions=[key]), limit=1).records
        meta = record.asset_materialization.metadata  # type: ignore[union-attr]
        shown[key] = {name: meta[name].value for name in ("dagster/row_count", "quarantined_rows")}
    return shown


def test_orchestration_turns_on_dagsters_event_batches() -> None:
    assert int(os.environ["DAGSTER_EVENT_BATCH_SIZE"]) >= len(DAYS)  # a year's range of one symbol is a few batches


def test_a_range_run_is_one_batch_on_postgres_and_shows_what_sqlite_shows(
    pg_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_postgres.event_log import PostgresEventLogStorage

    batches: list[list[str]] = []
    original = PostgresEventLogStorage.store_event_batch

    def spy(self: PostgresEventLogStorage, events: Sequence[Any]) -> None:
        batches.append([e.get_dagster_event().event_type_value for e in events])
        original(self, events)

    monkeypatch.setattr(PostgresEventLogStorage, "store_event_batch", spy)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": pg_schema_url}}}) as pg:
        on_postgres = _range_run(pg, tmp_path / "pg")
    with dg.instance_for_test() as sqlite:
        on_sqlite = _range_run(sqlite, tmp_path / "sqlite")

    assert ["ASSET_MATERIALIZATION"] * len(DAYS) in batches  # the four partitions in one write
    assert on_postgres == on_sqlite and set(on_sqlite) == {str(intraday_key(d, "AAPL")) for d in DAYS}
    assert on_sqlite[str(intraday_key("2024-11-29", "AAPL"))]["dagster/row_count"] == 210  # each partition its own rows
