"""The lake on an S3-compatible object store, for real against moto's S3 server on a loopback port.

The same ingest (offline source -> validation -> bars and quarantine) runs into a local lake and
into a bucket; every read (pruned by partition, the quarantine by its rows' own ts) must equal the
local lake's, object for file, byte for byte. A write that dies leaves no object a reader takes for
data: not the lake's readers, not a hive dataset reader pointed at the prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import boto3
import polars as pl
import pyarrow.dataset as pads
import pytest
from moto.server import ThreadedMotoServer
from polars.testing import assert_frame_equal

from lake import store
from lake.bulk import BulkSummary, bulk_ingest
from lake.calendar import session_bounds
from lake.errors import LakeError, UnknownSymbolError
from lake.filesystem import ObjectPath, lake_location
from lake.quarantine import read_quarantine
from lake.sources.synthetic import SyntheticSource

BUCKET = "quantlake-test"
SYMBOLS = ["AAPL", "MSFT"]
DAYS = ("2024-11-25", "2024-11-26", "2024-11-27")
BAD_BAR = ("MSFT", datetime(2024, 11, 26, 15, 0, tzinfo=UTC))  # its high is set below its low


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port), with a bucket, and fake AWS credentials in the
    environment, where both pyarrow (AWS SDK) and polars (object_store) look for them."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            env.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
            yield url
        finally:
            server.stop()


@pytest.fixture
def s3_root(endpoint: str) -> ObjectPath:
    """A fresh prefix in the bucket, named the way a user names it: QUANTLAKE_LAKE_URL's value."""
    root = lake_location(f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}", endpoint=endpoint)
    assert isinstance(root, ObjectPath)
    return root


class _OneBadBar:
    """The offline source with one impossible bar (high < low): validation must quarantine it."""

    name = "synthetic-one-bad-bar"

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        bars = SyntheticSource(seed=11).fetch(symbols, timeframe, start, end)
        bad = (pl.col("symbol") == BAD_BAR[0]) & (pl.col("ts") == BAD_BAR[1])
        return bars.with_columns(pl.when(bad).then(pl.col("low") - 1.0).otherwise(pl.col("high")).alias("high"))


def _ingest(root: Path | ObjectPath) -> BulkSummary:
    start, end = session_bounds(DAYS[0])[0], session_bounds(DAYS[-1])[1]
    return bulk_ingest(_OneBadBar(), SYMBOLS, "1m", start, end, root)  # type: ignore[arg-type]  # bulk's root is typed Path


def _objects(root: ObjectPath) -> list[str]:
    """Every object under the lake's prefix, as keys relative to it, listed by another client than
    the lake's (nothing the store hides is missed). pyarrow leaves empty folder markers (`.../`)
    behind deletes: they must be empty; the rest is returned."""
    s3 = boto3.client("s3", endpoint_url=root.store.endpoint, region_name="us-east-1")
    prefix = root.key.partition("/")[2] + "/"
    listing = s3.list_objects_v2(Bucket=root.bucket, Prefix=prefix)
    assert not listing["IsTruncated"]
    objects = {o["Key"].removeprefix(prefix): o["Size"] for o in listing.get("Contents", [])}
    assert all(size == 0 for key, size in objects.items() if key.endswith("/")), objects
    return sorted(key for key in objects if not key.endswith("/"))


def test_ingest_validation_quarantine_and_pruned_reads_equal_the_local_lake(tmp_path: Path, s3_root: ObjectPath) -> None:
    local_summary, s3_summary = _ingest(tmp_path), _ingest(s3_root)
    assert s3_summary == local_summary
    assert s3_summary.quarantined_rows >= 1 and s3_summary.written == {(s, d) for s in SYMBOLS for d in DAYS}

    local_files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert _objects(s3_root) == local_files, "the same layout, and nothing staged is left behind"
    for name in local_files:  # the writer is the same: byte-identical files
        assert (s3_root / name).read_bytes() == (tmp_path / name).read_bytes(), name

    everything = store.read_bars(s3_root, SYMBOLS, "1m")
    assert everything.height == store.read_bars(tmp_path, SYMBOLS, "1m").height == local_summary.clean_rows
    assert_frame_equal(everything, store.read_bars(tmp_path, SYMBOLS, "1m"))
    assert BAD_BAR not in set(everything.select("symbol", "ts").iter_rows())

    # A one-day read opens only the partitions that can hold it (a day's bars lie within +-1 UTC day).
    day_start, day_end = session_bounds("2024-11-27")
    pruned = store.partition_files(s3_root, "bars", "1m", ["AAPL"], day_start, day_end)
    assert [p.parent.name for p in pruned] == ["date=2024-11-26", "date=2024-11-27"]
    assert [p.parent.name for p in pruned] == [p.parent.name for p in store.partition_files(tmp_path, "bars", "1m", ["AAPL"], day_start, day_end)]
    assert_frame_equal(store.read_bars(s3_root, ["AAPL"], "1m", day_start, day_end), store.read_bars(tmp_path, ["AAPL"], "1m", day_start, day_end))
    lazy = store.scan_dataset(s3_root, "bars", "1m", ["MSFT"], day_start, day_end)
    assert lazy is not None and lazy.select(pl.len()).collect().item() == 390

    quarantined = read_quarantine(s3_root, "1m", SYMBOLS)
    assert_frame_equal(quarantined, read_quarantine(tmp_path, "1m", SYMBOLS))
    assert BAD_BAR in set(quarantined.select("symbol", "ts").iter_rows())
    assert_frame_equal(read_quarantine(s3_root, "1m", ["MSFT"], date_of(BAD_BAR[1]), day_start), quarantined.filter(pl.col("symbol") == "MSFT"))

    with pytest.raises(UnknownSymbolError, match="NVDA"):
        store.read_bars(s3_root, ["NVDA"], "1m")

    # Re-running is idempotent; replacing a partition with nothing removes its object.
    assert _ingest(s3_root) == s3_summary and _objects(s3_root) == local_files
    assert store.replace_partition(s3_root, "bars", "1m", "AAPL", "2024-11-25", everything.head(0)) == []
    assert "bars/timeframe=1m/symbol=AAPL/date=2024-11-25/part.parquet" not in _objects(s3_root)


def date_of(ts: datetime) -> datetime:
    return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)


def _hive_dataset_rows(root: ObjectPath) -> int:
    """What a generic reader takes for data: a pyarrow dataset discovered under bars/ (it skips `_` and `.` names)."""
    dataset = pads.dataset((root / "bars").key, filesystem=root.store.filesystem(), format="parquet")
    return dataset.count_rows()


def test_a_crash_mid_write_leaves_no_object_a_reader_takes_for_data(
    s3_root: ObjectPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = SyntheticSource(seed=5).fetch(["AAPL"], "1m", *session_bounds("2024-11-27"))
    [path] = store.replace_partition(s3_root, "bars", "1m", "AAPL", "2024-11-27", bars)
    real_write = pl.DataFrame.write_parquet

    def write_half_then_die(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        real_write(self.head(5), file)  # type: ignore[arg-type]  # some bytes are written...
        raise OSError("connection reset")  # ...and the writer dies before the object is complete

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_half_then_die)
    with pytest.raises(OSError, match="connection reset"):
        store.replace_partition(s3_root, "bars", "1m", "AAPL", "2024-11-27", bars.head(100))
    with pytest.raises(OSError, match="connection reset"):
        store.replace_partition(s3_root, "bars", "1m", "AAPL", "2024-11-28", bars.head(100))  # a new partition
    monkeypatch.undo()

    assert _objects(s3_root) == ["bars/timeframe=1m/symbol=AAPL/date=2024-11-27/part.parquet"]
    assert_frame_equal(store.read_bars(s3_root, ["AAPL"], "1m"), bars)
    assert _hive_dataset_rows(s3_root) == bars.height
    assert path == s3_root / "bars/timeframe=1m/symbol=AAPL/date=2024-11-27/part.parquet"


def test_a_killed_writes_staged_object_is_never_read_and_is_swept(s3_root: ObjectPath) -> None:
    """SIGKILL between the upload and the copy leaves the staged object beside its key: readers never
    take it, and a later write of that object removes it once it is old enough to be an orphan."""
    bars = SyntheticSource(seed=5).fetch(["AAPL"], "1m", *session_bounds("2024-11-27"))
    [path] = store.replace_partition(s3_root, "bars", "1m", "AAPL", "2024-11-27", bars)
    orphan = path.parent / f".{path.name}.deadbeef.tmp"
    with orphan.store.filesystem().open_output_stream(orphan.key) as out:
        out.write(b"PAR1 half a parquet file")
    assert_frame_equal(store.read_bars(s3_root, ["AAPL"], "1m"), bars)
    assert _hive_dataset_rows(s3_root) == bars.height

    store.replace_partition(s3_root, "bars", "1m", "AAPL", "2024-11-27", bars.head(100))
    assert orphan.exists(), "a fresh staged object may be another writer's upload in progress"
    assert path.sweep_orphans(older_than_s=-60.0) == [orphan]  # every staged object counts as old
    assert _objects(s3_root) == ["bars/timeframe=1m/symbol=AAPL/date=2024-11-27/part.parquet"]
    assert_frame_equal(store.read_bars(s3_root, ["AAPL"], "1m"), bars.head(100))


@pytest.mark.parametrize("url", ["s3://", "s3:///x", "s3://bucket/p?endpoint_override=x"])
def test_a_malformed_lake_url_is_refused(url: str) -> None:
    with pytest.raises(LakeError, match="is not s3://bucket"):
        lake_location(url)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host", "http://host:9000/bucket"])
def test_an_endpoint_that_is_not_an_http_url_is_refused_at_once(endpoint: str) -> None:
    with pytest.raises(LakeError, match="is not an http"):
        lake_location("s3://bucket/lake", endpoint=endpoint)


def test_a_local_root_stays_a_path(tmp_path: Path) -> None:
    assert lake_location(str(tmp_path)) == tmp_path and lake_location(tmp_path) == tmp_path


# --- through Dagster: the ingest job users run (the code location's own resources: tests/orchestration/test_s3_jobs.py)


def test_the_intraday_ingest_job_writes_the_same_lake_on_s3(tmp_path: Path, s3_root: ObjectPath, endpoint: str) -> None:
    """LakeResource as users configure it: root an s3:// URL, endpoint the store's."""
    import dagster as dg

    from assets.partitions import add_symbols, intraday_key
    from assets.resources import LakeResource, MarketDataResource
    from orchestration.definitions import defs

    job = defs.resolve_job_def("ingest_intraday_job")
    key = intraday_key("2024-11-29", "AAPL")  # a half day: 210 one-minute bars
    s3_lake = LakeResource(root=str(s3_root), endpoint=endpoint)
    assert s3_lake.location == s3_root
    for lake in (LakeResource(root=str(tmp_path)), s3_lake):
        with dg.instance_for_test() as instance:
            add_symbols(instance, ["AAPL"])
            result = job.execute_in_process(partition_key=key, instance=instance, resources={"lake": lake, "market_data": MarketDataResource()})
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
    local_files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert any(f.startswith("resampled/") for f in local_files) and any(f.startswith("features/") for f in local_files)
    assert _objects(s3_root) == local_files
    for name in local_files:
        assert (s3_root / name).read_bytes() == (tmp_path / name).read_bytes(), name
