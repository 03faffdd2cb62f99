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


# --- runless materializations reported in batches (`quantlake ingest --bulk`) ----------------------


def _materializations() -> list[dg.AssetMaterialization]:
    from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key

    from assets.partitions import daily_key

    minute = [
        dg.AssetMaterialization(asset_key="bars_1m", partition=intraday_key(day, symbol), description="written by quantlake ingest --bulk",
                                metadata={"source": "bulk backfill", "rows": 390 + i}, tags=get_tags_from_multi_partition_key(intraday_key(day, symbol)))
        for i, (symbol, day) in enumerate((s, d) for s in ("AAPL", "MSFT") for d in DAYS)
    ]  # fmt: skip
    daily = [dg.AssetMaterialization(asset_key="bars_1d", partition=daily_key(year, "AAPL"), metadata={"rows": int(year)}) for year in ("2023", "2024")]
    return minute + daily


def _answers(instance: dg.DagsterInstance) -> dict[str, Any]:
    """What the UI, the sensors and the range runs read back about the two assets."""
    out: dict[str, Any] = {"assets": sorted(k.to_user_string() for k in instance.get_asset_keys())}
    for name in ("bars_1m", "bars_1d"):
        key = dg.AssetKey(name)
        records = instance.fetch_materializations(key, limit=100, ascending=True).records
        out[name] = {
            "partitions": sorted(instance.get_materialized_partitions(key)),
            "events": [(r.partition_key, r.asset_materialization.description, dict(r.asset_materialization.metadata), dict(r.asset_materialization.tags or {}))  # type: ignore[union-attr]
                       for r in records],
            "ids_ascending": [r.storage_id for r in records] == sorted(r.storage_id for r in records),
            "latest": instance.get_latest_materialization_event(key).dagster_event.partition,  # type: ignore[union-attr]
            "record_last": instance.get_asset_records([key])[0].asset_entry.last_materialization_record.partition_key,  # type: ignore[union-attr]
            "run_ids": {r.run_id for r in records},
        }
    # The run-less events' own log (Dagster keeps them as the events of run ""), in order.
    out["runless_log"] = [e.dagster_event.partition for e in instance.all_logs("") if e.dagster_event]
    # The tags table, as the UI filters a multi-partitioned asset by one dimension.
    msft = instance.get_event_tags_for_asset(dg.AssetKey("bars_1m"), filter_tags={"dagster/partition/symbol": "MSFT"})
    out["msft_by_tag"] = sorted(tags["dagster/partition/date"] for tags in msft)
    return out


def test_runless_materializations_in_batches_read_back_as_one_by_one_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from orchestration.event_batches import report_materializations

    one_by_one_writes: list[Any] = []
    original = SqliteEventLogStorage.store_event

    def counted(self: SqliteEventLogStorage, event: Any) -> None:
        one_by_one_writes.append(event)
        original(self, event)

    monkeypatch.setattr(SqliteEventLogStorage, "store_event", counted)
    with dg.instance_for_test() as alone:
        for m in _materializations():
            alone.report_runless_asset_event(m)
        expected = _answers(alone)
    assert len(one_by_one_writes) == len(_materializations())
    one_by_one_writes.clear()
    with dg.instance_for_test() as batched:
        report_materializations(batched, _materializations(), batch=6)  # a full batch, then a short one with both assets
        got = _answers(batched)
    assert not one_by_one_writes  # every event went in a batch
    # Storage ids and timestamps differ between two instances; everything read back is the same.
    assert got == expected
    assert got["bars_1m"]["record_last"] == str(intraday_key(DAYS[-1], "MSFT")) and len(got["msft_by_tag"]) == len(DAYS)
    assert got["bars_1m"]["events"][5][2]["rows"] == dg.IntMetadataValue(395)  # each partition its own metadata


def test_runless_materializations_go_through_dagsters_batches_on_postgres(pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_postgres.event_log import PostgresEventLogStorage

    from orchestration.event_batches import report_materializations

    sizes: list[int] = []
    original = PostgresEventLogStorage.store_event_batch

    def counted(self: PostgresEventLogStorage, events: Sequence[Any]) -> None:
        sizes.append(len(events))
        original(self, events)

    monkeypatch.setattr(PostgresEventLogStorage, "store_event_batch", counted)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": pg_schema_url}}}) as pg:
        report_materializations(pg, _materializations(), batch=4)
        got = _answers(pg)
    with dg.instance_for_test() as sqlite:
        for m in _materializations():
            sqlite.report_runless_asset_event(m)
        expected = _answers(sqlite)
    assert sizes == [4, 4, 2] and got == expected
