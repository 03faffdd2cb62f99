"""Ledger compaction: old events that are archived and folded into the snapshot leave the live table.

The ledger is append-only (a trigger rejects UPDATE and DELETE); compaction is the one explicit
maintenance operation that removes rows, run by `retention_job` when
QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS is set (default -1: never). It removes a seq-ordered
prefix, whole archive files at a time, and only events that are all of:
- recorded before `before` (the retention horizon);
- in a verified archive file (`trading.ledger.archive`) whose events are, field for field, the
  ledger's rows of that seq range (SHA-256 over the canonical rows, recomputed from the ledger);
- folded into the stored projection snapshot of this code version (saved first, here);
- older than the ledger's newest event, which always stays (SQLite would reuse its seq).
In one transaction: the trigger lifted (SQLite: dropped and re-created from its own stored SQL;
PostgreSQL: disabled and enabled, which locks the table until commit), the rows deleted (their
count must be the verified count, or nothing happens), and the compaction record written.

The record is the row `compaction` of `ledger_snapshots`: `last_seq` the highest seq removed,
`applied` how many events were removed in all, `data` the archive folder (a local path, or an
`s3://` URL with the store's endpoint and region: the folder is found again without the deployment's
settings). The projections read it
(`trading.ledger.projections`): a fold that cannot start from a snapshot of its version (new code)
starts from the archive's events up to that seq, never from an empty state; a folder that is gone
stops the fold with an error rather than a wrong portfolio. Raw readers of `Ledger.events` see the
live window only; the full history is `restore_events(archive)` then the ledger. A removed event's
`event_id` is no longer in the table, so appending it again would store it again: the horizon must
be longer than anything that re-emits old events (a re-run of a months-old run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lake.filesystem import ObjectPath, lake_location
from trading.ledger.archive import (
    ArchiveError,
    ArchivePath,
    _digest,
    _read_rows,
    _row,
    archived_files,
    event_count,
    verify_archive,
)
from trading.ledger.store import Ledger, LedgerError, Snapshot, ledger_events

RECORD = "compaction"  # the ledger_snapshots row that says what was removed
RECORD_VERSION = "compaction-1"
_SAVE_RECORD = sa.text(
    "INSERT INTO ledger_snapshots (name, version, last_seq, applied, data) VALUES (:name, :version, :last_seq, :applied, :data) "
    "ON CONFLICT (name) DO UPDATE SET version = excluded.version, last_seq = excluded.last_seq, "
    "applied = excluded.applied, data = excluded.data"
)
_SQLITE_TRIGGER = "ledger_events_no_delete"
_POSTGRES_TRIGGER = "ledger_events_no_update_delete"


@dataclass(frozen=True)
class Compacted:
    """What compaction removed from the ledger so far: seqs up to `up_to_seq`, `events` rows in all."""

    up_to_seq: int = 0
    events: int = 0
    archive: ArchivePath | None = None


@dataclass(frozen=True)
class CompactionResult:
    removed: int  # events removed by this pass
    up_to_seq: int  # the highest seq removed so far (0: none)
    files: int  # archive files whose events left the ledger in this pass
    total_removed: int  # in all passes


def compacted(ledger: Ledger) -> Compacted:
    """The ledger's compaction record (nothing removed: the zero record)."""
    record = ledger.load_snapshot(RECORD)
    if record is None:
        return Compacted()
    data = json.loads(record.data)
    archive = lake_location(data["archive"], endpoint=data.get("endpoint"), region=data.get("region"))
    return Compacted(record.last_seq, record.applied, archive)


def _record_data(folder: ArchivePath) -> str:
    """Where the archive is, for `compacted` to find it again: an object store's endpoint and region too."""
    if isinstance(folder, ObjectPath):
        return json.dumps({"archive": str(folder), "endpoint": folder.store.endpoint, "region": folder.store.region})
    return json.dumps({"archive": str(folder)})


def archived_rows(state: Compacted) -> Iterator[tuple[int, str, str | None, str | None, dict[str, Any] | None, int]]:
    """The removed events as `Ledger.rows` gives them (seq, type, stamp minute, as_of minute, payload,
    v), read from the archive, in seq order: where a fold of a compacted ledger starts."""
    if state.archive is None or not state.up_to_seq:
        return
    files = [(first, last, path) for first, last, path in archived_files(state.archive) if first <= state.up_to_seq]
    if not files or files[-1][1] < state.up_to_seq:
        raise LedgerError(
            f"the ledger's events up to seq {state.up_to_seq} were compacted into the archive at {state.archive}, "
            "which does not hold them: restore that folder to replay the ledger"
        )
    verify_archive(state.archive)
    held = sum(event_count(path) for first, last, path in files if last <= state.up_to_seq)
    if held != state.events:  # a file gone from the middle: seqs may skip (PostgreSQL), counts may not
        raise LedgerError(
            f"the ledger's {state.events} events up to seq {state.up_to_seq} were compacted into the archive at {state.archive}, "
            f"which holds {held} of them: restore that folder to replay the ledger"
        )
    for _first, _last, path in files:
        rows, _ = _read_rows(path)
        for row in rows:
            if row["seq"] > state.up_to_seq:
                return
            stamp = row["as_of"] or row["recorded_at"]
            as_of = _minute(row["as_of"]) if row["type"] == "cost" else None
            yield row["seq"], row["type"], _minute(stamp), as_of, json.loads(row["payload"]), int(row["v"])


def _minute(value: datetime | None) -> str | None:
    from trading.ledger.projections import _minute as minute

    return minute(value)


def compact_ledger(ledger: Ledger, folder: ArchivePath, before: datetime) -> CompactionResult:
    """Removes the archived, snapshotted events recorded before `before` (see the module's rules)."""
    from trading.ledger.projections import CODE_VERSION, SNAPSHOT_NAME, project, to_json

    if before.tzinfo is None:
        raise ArchiveError(f"compaction cutoff {before} is timezone-naive; pass an aware datetime")
    folder = folder.resolve() if isinstance(folder, Path) else folder
    state = compacted(ledger)
    if state.archive is not None and state.archive != folder:
        raise ArchiveError(f"the ledger was compacted into {state.archive}, not {folder}: one archive per ledger")
    projection = project(ledger)  # caught up: the snapshot saved next covers every event read
    ledger.save_snapshot(Snapshot(SNAPSHOT_NAME, CODE_VERSION, projection.last_seq, projection.applied, to_json(projection)))
    snapshot = ledger.load_snapshot(SNAPSHOT_NAME)
    if snapshot is None or snapshot.version != CODE_VERSION:  # pragma: no cover - just saved
        raise ArchiveError("no projection snapshot of this code version: nothing compacted")
    if ledger.count(until_seq=snapshot.last_seq) + state.events != snapshot.applied:
        raise ArchiveError(f"the snapshot folded {snapshot.applied} events up to seq {snapshot.last_seq}, the ledger has another count: nothing compacted")
    verify_archive(folder)
    # The newest event always stays: SQLite (no AUTOINCREMENT) would hand its seq out again.
    newest = ledger.last_seq()
    files = [(f, last, p) for f, last, p in archived_files(folder) if state.up_to_seq < last <= snapshot.last_seq and last < newest]
    up_to, expected, taken = state.up_to_seq, 0, 0
    ledger_rows = ledger.events_with_seq(after_seq=state.up_to_seq)
    pending: tuple[int, Any] | None = next(ledger_rows, None)
    for first, last, path in files:
        mine: list[dict[str, Any]] = []
        while pending is not None and pending[0] <= last:
            seq, event = pending
            if seq < first:
                raise ArchiveError(f"ledger seq {seq} is in no archive file (the next starts at {first}): nothing compacted")
            mine.append(_row(seq, event))
            pending = next(ledger_rows, None)
        if any(row["recorded_at"] >= before for row in mine):
            break  # this file reaches into the retention window: it and the later ones stay
        archived, meta = _read_rows(path)
        if len(mine) != len(archived) or _digest(mine) != meta.get(b"quantlake.sha256", b"").decode():
            raise ArchiveError(f"{path.name}: the ledger's seq {first}..{last} differ from the archived events: nothing compacted")
        up_to, expected, taken = last, expected + len(mine), taken + 1
    if not expected:
        return CompactionResult(0, state.up_to_seq, 0, state.events)
    _delete(ledger, state, up_to, expected, folder)
    return CompactionResult(expected, up_to, taken, state.events + expected)


def _delete(ledger: Ledger, state: Compacted, up_to: int, expected: int, folder: ArchivePath) -> None:
    t = ledger_events
    record = {"name": RECORD, "version": RECORD_VERSION, "last_seq": up_to, "applied": state.events + expected, "data": _record_data(folder)}
    try:
        with ledger.engine.connect() as conn:
            if ledger.dialect == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if ledger.dialect == "sqlite":
                    trigger = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (_SQLITE_TRIGGER,)).scalar_one()
                    conn.exec_driver_sql(f"DROP TRIGGER {_SQLITE_TRIGGER}")
                else:
                    conn.exec_driver_sql(f"ALTER TABLE {t.name} DISABLE TRIGGER {_POSTGRES_TRIGGER}")
                removed = conn.execute(sa.delete(t).where(t.c.seq > state.up_to_seq, t.c.seq <= up_to)).rowcount
                if removed != expected:  # a row committed into the range after it was verified
                    raise ArchiveError(f"{removed} rows in seq {state.up_to_seq + 1}..{up_to}, {expected} verified: nothing compacted")
                if ledger.dialect == "sqlite":
                    conn.exec_driver_sql(trigger)
                else:
                    conn.exec_driver_sql(f"ALTER TABLE {t.name} ENABLE TRIGGER {_POSTGRES_TRIGGER}")
                conn.execute(_SAVE_RECORD, record)
    except ArchiveError:
        raise
    except Exception as exc:
        raise LedgerError(f"compaction of the ledger at {ledger.url} failed (nothing removed): {exc}") from exc
