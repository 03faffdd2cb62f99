"""The ledger's archive in an object store (moto's S3 server on a loopback port): the same files,
verified the same way, compaction replaying from the bucket, and failing closed when an object is
tampered with or gone, as for a local folder (tests/trading/test_ledger_compaction.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lake.filesystem import ObjectPath, ObjectStore
from tests.lake.test_s3_lake import BUCKET, endpoint  # noqa: F401  # endpoint: moto's server, a fixture
from tests.trading.test_ledger_compaction import ARCHIVE_BEFORE, COMPACT_BEFORE, _events
from trading.events import Event
from trading.ledger import Ledger, LedgerError, project, projections
from trading.ledger.archive import (
    ArchiveError,
    _read_rows,
    archive_events,
    archived_files,
    restore_events,
    verify_archive,
)
from trading.ledger.compaction import compact_ledger, compacted


@pytest.fixture
def bucket_folder(endpoint: str) -> ObjectPath:  # noqa: F811
    return ObjectPath(f"{BUCKET}/lake-{uuid.uuid4().hex[:8]}/archive/ledger", ObjectStore(endpoint=endpoint))


def _state(url: str) -> dict[str, Any]:
    with Ledger(url) as ledger:
        return json.loads(projections.to_json(project(ledger)))  # type: ignore[no-any-return]


def _write(url: str, events: list[Event], folder: Path | ObjectPath) -> None:
    with Ledger(url) as ledger:
        ledger.append_many(events)
        archive_events(ledger, folder, ARCHIVE_BEFORE, max_events=100)


def test_the_bucket_archive_is_the_local_one_and_compaction_replays_from_it(bucket_folder: ObjectPath, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events, local = _events(), tmp_path / "archive"
    bucket_url, local_url = f"sqlite:///{tmp_path / 'bucket.sqlite'}", f"sqlite:///{tmp_path / 'local.sqlite'}"
    _write(bucket_url, events, bucket_folder)
    _write(local_url, events, local)
    ranges = [(a, b) for a, b, _ in archived_files(bucket_folder)]
    assert len(ranges) > 3 and ranges == [(a, b) for a, b, _ in archived_files(local)]
    assert [_read_rows(p)[0] for *_, p in archived_files(bucket_folder)] == [_read_rows(p)[0] for *_, p in archived_files(local)]
    assert verify_archive(bucket_folder) == verify_archive(local) == ranges[-1][1]
    assert list(restore_events(bucket_folder)) == events[: ranges[-1][1]]
    with Ledger(bucket_url) as ledger:  # a second pass with the same cutoff writes nothing
        again = archive_events(ledger, bucket_folder, ARCHIVE_BEFORE, max_events=100)
    assert again.events == 0 and [(a, b) for a, b, _ in archived_files(bucket_folder)] == ranges

    before = _state(bucket_url)
    with Ledger(bucket_url) as ledger:
        result = compact_ledger(ledger, bucket_folder, COMPACT_BEFORE)
        assert result.removed > 300 and compacted(ledger).archive == bucket_folder
    assert [o.name for o in bucket_folder.parent.files() if o.name.endswith(".tmp")] == []  # no staged object left
    monkeypatch.setattr(projections, "CODE_VERSION", "another-fold")  # new code: the fold starts from the bucket
    assert _state(bucket_url) == before

    # An object gone: the fold of yet other code stops with an error rather than a wrong portfolio.
    monkeypatch.setattr(projections, "CODE_VERSION", "a-third-fold")
    bucket_folder.store.filesystem().delete_file(archived_files(bucket_folder)[0][2].key)  # type: ignore[union-attr]
    with pytest.raises(LedgerError, match="restore that folder"):
        _state(bucket_url)


def test_a_tampered_object_fails_verification_and_nothing_is_compacted(bucket_folder: ObjectPath, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    _write(url, _events(), bucket_folder)
    _first, _last, path = archived_files(bucket_folder)[1]
    assert isinstance(path, ObjectPath)
    table = pq.read_table(pa.BufferReader(path.read_bytes()))
    rows = table.to_pylist()
    rows[0]["payload"] = rows[0]["payload"].replace("AAPL", "MSFT") if "AAPL" in rows[0]["payload"] else rows[0]["payload"] + " "
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), buffer)  # the same metadata, other rows
    path.write_bytes_atomic(buffer.getvalue().to_pybytes())
    with pytest.raises(ArchiveError, match=f"{path}: .* events with digest"):
        verify_archive(bucket_folder)
    with Ledger(url) as ledger:
        n = ledger.count()
        with pytest.raises(ArchiveError):
            compact_ledger(ledger, bucket_folder, COMPACT_BEFORE)
        assert ledger.count() == n and compacted(ledger).up_to_seq == 0
