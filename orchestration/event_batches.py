"""Many runless materializations reported to the instance as batches, not one write each.

`quantlake ingest --bulk` reports every partition it wrote (a year of one-minute bars of 100
symbols is 25,200 partitions). Dagster's `report_runless_asset_event` writes each one alone: on the
default SQLite instance that is two databases opened and committed per partition, ~6.6 ms, so the
report took longer than the ingest. Here:

- On a SQLite instance (Dagster's `SqliteEventLogStorage`), each batch goes in one transaction per
  database: the rows Dagster's `store_event` writes for each event (the run shard's row, the index
  shard's row and the event's tags), and the asset's own row updated from the batch's last event
  per asset, as Dagster's PostgreSQL storage does for its batches.
- On any other storage, through Dagster's own batches (`report_dagster_event` with batch metadata,
  `DAGSTER_EVENT_BATCH_SIZE`): PostgreSQL writes each batch at once, others one event at a time.

`tests/orchestration/test_event_batches.py` checks that an instance reported to in batches answers
every question the UI and the sensors ask exactly as one reported to event by event does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from dagster._core.events import (
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    StepMaterializationData,
    generate_event_batch_id,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._time import get_current_timestamp

BATCH = 1000  # events a transaction: the shards' locks are held briefly, memory stays small


def report_materializations(instance: dg.DagsterInstance, materializations: Sequence[dg.AssetMaterialization], batch: int = BATCH) -> None:
    """Reports `materializations` as runless events, as `report_runless_asset_event` would, in batches."""
    storage = instance.event_log_storage
    for chunk in _chunks(materializations, batch):
        events = [_runless(m) for m in chunk]
        if type(storage) is SqliteEventLogStorage:  # exactly Dagster's: a subclass may store differently
            _store_on_sqlite(storage, [_entry(e) for e in events])
        else:
            batch_id = generate_event_batch_id()
            for i, event in enumerate(events):
                instance.report_dagster_event(event, run_id=RUNLESS_RUN_ID, batch_metadata=DagsterEventBatchMetadata(batch_id, i == len(events) - 1))


def _chunks(items: Sequence[dg.AssetMaterialization], size: int) -> Iterator[Sequence[dg.AssetMaterialization]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _runless(materialization: dg.AssetMaterialization) -> DagsterEvent:
    """The event `report_runless_asset_event` builds for a materialization."""
    return DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        event_specific_data=StepMaterializationData(materialization),
        job_name=RUNLESS_JOB_NAME,
    )


def _entry(event: DagsterEvent) -> EventLogEntry:
    """The log entry `report_dagster_event` wraps an event in."""
    return EventLogEntry(
        user_message="", level=20, job_name=event.job_name, run_id=RUNLESS_RUN_ID, error_info=None,
        timestamp=get_current_timestamp(), step_key=event.step_key, dagster_event=event,
    )  # fmt: skip


def _store_on_sqlite(storage: SqliteEventLogStorage, entries: list[EventLogEntry]) -> None:
    """What `SqliteEventLogStorage.store_event` writes for each asset materialization, a shard at a time."""
    rows = [storage._event_to_row(e) for e in entries]  # noqa: SLF001  the storage's own row for an event
    with storage.run_connection(RUNLESS_RUN_ID) as conn:
        conn.execute(SqlEventLogStorageTable.insert(), rows)
    with storage.index_transaction() as conn:
        ids = [_inserted_id(conn.execute(SqlEventLogStorageTable.insert().values(**row))) for row in rows]
        storage._store_asset_event_tags(conn, entries, ids)  # noqa: SLF001
        # The asset's row keeps its last event: written once, from the batch's last event per asset.
        last = {e.get_dagster_event().asset_key: i for i, e in enumerate(entries)}
        for i in sorted(last.values()):
            storage._store_asset_event(conn, entries[i], ids[i])  # noqa: SLF001


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None or key[0] is None:  # as Dagster's store_event: tags cannot point at no row
        raise RuntimeError("the event log's index shard returned no id for an inserted event")
    return int(key[0])
