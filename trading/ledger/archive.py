"""The ledger's old events copied to Parquet, verified: an audit trail that outlives the database.

`archive_events` appends the ledger's oldest events (a prefix in `seq` order, up to the first event
recorded at or after `before`) to the archive folder, one file per pass, named by its seq range.
Each file carries in its schema metadata the number of events and a SHA-256 over their canonical
JSON; the file is read back and checked against the ledger before the pass reports it written. A
second pass with the same `before` writes nothing (it resumes after the last archived seq).

`restore_events` reads every file back as `Event`s, in seq order, and `verify_archive` proves the
files are whole and contiguous: the archive alone replays to the projection the ledger had.
The folder is a local `Path` or an `ObjectPath` of an object-store lake: there a file is written
whole, staged beside its key and copied into place (`ObjectPath.write_bytes_atomic`), then read back.
The ledger keeps its rows unless compaction (`trading.ledger.compaction`, opt-in) removes the
archived, snapshotted ones; the projections then start from this archive when they need to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lake.filesystem import ObjectPath
from trading.events import Event
from trading.ledger.store import Ledger, LedgerError

_FILE_RE = re.compile(r"^events-(\d{12})-(\d{12})\.parquet$")
SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("run_id", pa.string()),
        ("trace_id", pa.string()),
        ("mode", pa.string()),
        ("symbol", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("v", pa.int64()),
        ("payload", pa.string()),  # canonical JSON (sorted keys): what the digest covers
    ]
)


ArchivePath = Path | ObjectPath  # where the archive lives: beside a local lake or in its bucket


class ArchiveError(LedgerError):
    """An archive file that is not what its metadata says, or files that leave a gap."""


@dataclass(frozen=True)
class ArchiveResult:
    events: int  # events written by this pass (0: nothing older than `before` left to archive)
    first_seq: int | None
    last_seq: int | None
    path: ArchivePath | None  # the last file written
    bytes: int  # of the files written


def _row(seq: int, e: Event) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": e.event_id,
        "type": e.type.value,
        "run_id": e.run_id,
        "trace_id": e.trace_id,
        "mode": e.mode.value,
        "symbol": e.symbol,
        "as_of": e.as_of,
        "recorded_at": e.recorded_at,
        "v": e.v,
        "payload": json.dumps(e.payload, sort_keys=True, separators=(",", ":"), allow_nan=False),
    }


def _digest(rows: Iterable[dict[str, Any]]) -> str:
    """SHA-256 over each row's fields as canonical JSON (times as ISO instants)."""
    h = hashlib.sha256()
    for row in rows:
        canon = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
        h.update(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def archived_files(folder: ArchivePath) -> list[tuple[int, int, ArchivePath]]:
    """(first seq, last seq, file) of each archive file, in seq order."""
    if isinstance(folder, ObjectPath):
        children: list[ArchivePath] = [p for p in folder.files() if p.parent == folder]  # one listing; staged temps never match
    elif folder.is_dir():
        children = list(folder.iterdir())
    else:
        return []
    found = [(int(m.group(1)), int(m.group(2)), p) for p in children if (m := _FILE_RE.match(p.name))]
    return sorted(found, key=lambda f: (f[0], f[1]))


def _size(path: ArchivePath) -> int:
    return path.size() if isinstance(path, ObjectPath) else path.stat().st_size


def last_archived_seq(folder: ArchivePath) -> int:
    files = archived_files(folder)
    return files[-1][1] if files else 0


def archive_events(ledger: Ledger, folder: ArchivePath, before: datetime, *, max_events: int = 100_000) -> ArchiveResult:
    """Archives the events after the last archived seq, in seq order, up to the first one recorded
    at or after `before` (an aware instant: the cutoff the caller's retention computed), in files of
    at most `max_events` events (memory stays bounded on a first pass over a long ledger)."""
    if before.tzinfo is None:
        raise ArchiveError(f"archive cutoff {before} is timezone-naive; pass an aware datetime")
    if max_events < 1:
        raise ArchiveError(f"max_events={max_events}: expected at least 1")
    total, first, last, path, size = 0, None, None, None, 0
    while True:
        written = _archive_file(ledger, folder, before, max_events)
        if written is None:
            break
        n, lo, last, path = written
        total, first, size = total + n, first if first is not None else lo, size + _size(path)
        if n < max_events:
            break
    return ArchiveResult(total, first, last, path, size)


def _archive_file(ledger: Ledger, folder: ArchivePath, before: datetime, limit: int) -> tuple[int, int, int, ArchivePath] | None:
    """One file of up to `limit` events after the archive's last seq; None when none is due."""
    after = last_archived_seq(folder)
    rows: list[dict[str, Any]] = []
    for seq, event in ledger.events_with_seq(after_seq=after, batch=min(limit, 10_000)):
        if event.recorded_at >= before:
            break  # a prefix only: the archive and the ledger's remainder never interleave
        rows.append(_row(seq, event))
        if len(rows) == limit:
            break
    if not rows:
        return None
    first, last = rows[0]["seq"], rows[-1]["seq"]
    if first <= after:  # pragma: no cover - events_with_seq reads strictly after `after`
        raise ArchiveError(f"ledger seq {first} is not after the archive's last seq {after}")
    digest = _digest(rows)
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {"quantlake.events": str(len(rows)), "quantlake.sha256": digest, "quantlake.ledger": ledger.url}
    )
    path = folder / f"events-{first:012d}-{last:012d}.parquet"
    _write_atomic(table, path)
    if _verify_file(path) != digest:
        raise ArchiveError(f"{path}: read back, its events differ from the ledger's seq {first}..{last}")
    return len(rows), first, last, path


def _write_atomic(table: pa.Table, path: ArchivePath) -> None:
    if isinstance(path, ObjectPath):
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        path.write_bytes_atomic(buffer.getvalue().to_pybytes())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_rows(path: ArchivePath) -> tuple[list[dict[str, Any]], dict[bytes, bytes]]:
    table = pq.read_table(pa.BufferReader(path.read_bytes()) if isinstance(path, ObjectPath) else path)
    return table.to_pylist(), dict(table.schema.metadata or {})


def event_count(path: ArchivePath) -> int:
    """The number of events a file's metadata says it holds (its footer only: no rows read)."""
    if isinstance(path, ObjectPath):
        with path.store.filesystem().open_input_file(path.key) as source:
            meta = pq.read_schema(source).metadata or {}
    else:
        meta = pq.read_schema(path).metadata or {}
    return int(meta.get(b"quantlake.events", b"-1"))


def _verify_file(path: ArchivePath) -> str:
    """The file's digest, recomputed from its rows; ArchiveError if it differs from its metadata."""
    rows, meta = _read_rows(path)
    want = meta.get(b"quantlake.sha256", b"").decode()
    count = int(meta.get(b"quantlake.events", b"-1"))
    got = _digest(rows)
    if len(rows) != count or got != want:
        raise ArchiveError(f"{path}: {len(rows)} events with digest {got[:12]}, its metadata says {count} with {want[:12]}")
    return got


def verify_archive(folder: ArchivePath) -> int:
    """Checks every file against its metadata and that the seq ranges follow each other with no
    overlap; returns the number of events archived."""
    total, previous = 0, 0
    for first, last, path in archived_files(folder):
        if first <= previous:
            raise ArchiveError(f"{path.name}: starts at seq {first}, the previous file ends at {previous}")
        _verify_file(path)
        rows, _ = _read_rows(path)
        seqs = [r["seq"] for r in rows]
        if seqs != sorted(seqs) or seqs[0] != first or seqs[-1] != last:
            raise ArchiveError(f"{path.name}: its seqs run {seqs[0]}..{seqs[-1]}, not {first}..{last} in order")
        total += len(rows)
        previous = last
    return total


def restore_events(folder: ArchivePath) -> Iterator[Event]:
    """Every archived event, in seq order, as the ledger returned it."""
    for _first, _last, path in archived_files(folder):
        rows, _ = _read_rows(path)
        for row in rows:
            row.pop("seq")
            row["payload"] = json.loads(row["payload"])
            yield Event.model_validate(row)
