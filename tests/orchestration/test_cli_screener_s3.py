"""The command line's lake and the screener on a lake in an S3-compatible object store (moto's S3
server on a loopback port), named only by the environment (QUANTLAKE_LAKE_URL, AWS_ENDPOINT_URL):
`quantlake ingest --bulk`, `quantlake status` and `quantlake backtest` work on the bucket, and the
screener asset screens from it and writes its screen there, each equal to the same on a local lake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.screener import chosen_symbols
from lake.store import read_bars
from orchestration.cli import main
from tests.lake.test_s3_lake import _objects, endpoint  # noqa: F401  # endpoint: moto's server, a fixture
from tests.orchestration.test_s3_jobs import s3_lake  # noqa: F401  # the environment of a lake in the bucket

BULK = ["ingest", "--start", "2024-11-26", "--end", "2024-11-29", "--symbols", "AAPL,MSFT", "--bulk", "--no-progress"]
DAY = "2024-11-27"
NOW = "2024-11-27T17:00:00+00:00"  # noon in New York: the day has opened, the prior session has closed


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,JPM,MSFT")  # JPM: in the universe, never ingested
    return tmp_path / "home"


def _local_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _lines(out: str) -> list[str]:
    """`quantlake status`'s lines about the datasets (not where the lake or the Dagster home is)."""
    return [line for line in out.splitlines() if line.startswith("  ")]


def test_bulk_ingest_status_and_a_backtest_from_the_command_line_on_the_bucket(
    s3_lake: ObjectPath, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    local = tmp_path / "local-lake"  # QUANTLAKE_LAKE_DIR: it must stay empty while the URL is set
    assert main(BULK) == 0
    out = capsys.readouterr().out
    assert "1m: 1,980 rows, 1,980 written to 6 partitions, 0 quarantined" in out and "1d: 504 rows" in out
    assert f"lake: {s3_lake}" in out
    assert read_bars(s3_lake, ["AAPL", "MSFT"], "1m").height == 1980
    with dg.DagsterInstance.get() as instance:  # reported to the instance as the local path does
        assert len(instance.fetch_materializations(dg.AssetKey("bars_1m"), limit=20).records) == 6

    assert main(["backtest", "--symbols", "AAPL,MSFT", "--start", "2024-01-01", "--end", "2025-01-01", "--no-progress"]) == 0
    assert f"report files: {s3_lake}/research/backtest" in capsys.readouterr().out
    assert "research/backtest/metrics.json" in _objects(s3_lake)
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert status.startswith(f"lake: {s3_lake}\n")
    assert "  bars        timeframe=1m        6 partitions  AAPL, MSFT" in _lines(status)

    assert not list(local.rglob("*")), "nothing goes to the local lake folder"

    # The same commands on a local lake: the same objects, byte for byte, and the same status.
    monkeypatch.delenv("QUANTLAKE_LAKE_URL")
    assert main(BULK) == 0 and main(["backtest", "--symbols", "AAPL,MSFT", "--start", "2024-01-01", "--end", "2025-01-01", "--no-progress"]) == 0
    capsys.readouterr()
    data = [f for f in _local_files(local) if not f.startswith("research/")]
    assert [f for f in _objects(s3_lake) if not f.startswith("research/")] == data
    for name in data:
        assert (s3_lake / name).read_bytes() == (local / name).read_bytes(), name
    assert main(["status"]) == 0
    assert _lines(capsys.readouterr().out) == _lines(status)
    assert main(["status", "--lake", str(s3_lake)]) == 0  # a URL given on the command line
    assert _lines(capsys.readouterr().out) == _lines(status)


def test_the_screener_screens_from_the_bucket_and_writes_its_screen_there(
    s3_lake: ObjectPath, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    from assets.resources import LakeResource, TradingResource
    from assets.screener import screened_universe, screener
    from orchestration.run_context import ObservedLakeResource

    monkeypatch.setenv("QUANTLAKE_SCREENER_LOOKBACK", "5")
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_GAP", "0.5")  # the gap filter reads the day's 1m opens from the lake
    local = tmp_path / "local-lake"
    metadata = []
    for lake in (ObservedLakeResource(), LakeResource(root=str(local))):  # the environment's lake (the bucket), then a local one
        assert main(BULK) == 0
        result = dg.materialize([screener], partition_key=DAY, resources={"lake": lake, "trading": TradingResource()}, tags={"quantlake/now": NOW})
        assert result.success
        [event] = result.get_asset_materialization_events()
        metadata.append(event.materialization.metadata)
        monkeypatch.delenv("QUANTLAKE_LAKE_URL", raising=False)
    name = f"screener/date={DAY}/part.parquet"
    assert name in _objects(s3_lake) and (s3_lake / name).read_bytes() == (local / name).read_bytes()
    s3_meta, local_meta = metadata
    assert s3_meta["path"].value == f"{s3_lake}/{name}"
    assert s3_meta["gap_opens_known"].value == local_meta["gap_opens_known"].value == 2  # AAPL's and MSFT's opens, read from the bucket
    assert s3_meta["chosen"].value == local_meta["chosen"].value and sorted(s3_meta["chosen"].value) == ["AAPL", "MSFT"]  # type: ignore[arg-type]
    assert "JPM" in s3_meta["rejected"].value  # type: ignore[operator]  # no bars in the bucket: rejected by name
    # Decide runs with the screener on take the day's chosen symbols from the bucket; a day never screened is an error naming it.
    monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    assert chosen_symbols(s3_lake, DAY) == screened_universe(s3_lake, datetime.fromisoformat(NOW), None) == ["AAPL", "MSFT"]
    with pytest.raises(LakeError, match=f"no output for 2024-11-26 \\({s3_lake}/screener/"):
        screened_universe(s3_lake, datetime(2024, 11, 26, 17, tzinfo=UTC), None)
