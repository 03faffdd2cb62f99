"""The jobs users run, on a lake in an S3-compatible object store (moto's S3 server on a loopback port).

Only the environment says where the lake is: QUANTLAKE_LAKE_URL=s3://bucket/prefix and the store's
endpoint in AWS_ENDPOINT_URL (credentials in AWS_*). The code location's own resources run the
ingest jobs and a research asset; every output is an object in the bucket and nothing is written
to the local lake folder.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake.errors import LakeError
from lake.filesystem import ObjectPath, lake_location
from lake.store import read_bars
from tests.lake.test_s3_lake import BUCKET, _objects, endpoint  # noqa: F401  # endpoint: moto's server, a fixture

SYMBOLS = ["AAPL", "MSFT"]
DAY, YEAR = "2024-11-29", "2024"  # a half day: 210 one-minute bars


@pytest.fixture
def s3_lake(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectPath:  # noqa: F811
    """The environment of a deployment whose lake is in the bucket; QUANTLAKE_LAKE_DIR names a local
    folder too, which must stay empty (the URL wins)."""
    url = f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("QUANTLAKE_LAKE_URL", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(tmp_path / "local-lake"))
    root = lake_location(url, endpoint=endpoint)
    assert isinstance(root, ObjectPath)
    return root


def test_ingest_and_a_backtest_through_the_default_resources_write_the_bucket(s3_lake: ObjectPath, tmp_path: Path) -> None:
    from assets.partitions import add_symbols, daily_key, intraday_key
    from orchestration.definitions import defs

    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        intraday = defs.resolve_job_def("ingest_intraday_job").execute_in_process(partition_key=intraday_key(DAY, "AAPL"), instance=instance)
        daily = [
            defs.resolve_job_def("ingest_daily_job").execute_in_process(partition_key=daily_key(YEAR, symbol), instance=instance)
            for symbol in SYMBOLS
        ]
        backtest = defs.resolve_job_def("backtest_job").execute_in_process(
            instance=instance,
            run_config={"ops": {"backtest": {"config": {"symbols": SYMBOLS, "start": "2024-01-01", "end": "2025-01-01"}}}},
        )
    for result in (intraday, *daily, backtest):
        assert result.success
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        assert failed in ([], ["warm_up_year_present"]), failed  # 2023 is not ingested: features' warn-only check

    objects = _objects(s3_lake)
    expected = {
        f"bars/timeframe=1m/symbol=AAPL/date={DAY}/part.parquet",
        f"resampled/timeframe=5m/symbol=AAPL/date={DAY}/part.parquet",
        f"features/timeframe=1m/symbol=AAPL/date={DAY}/part.parquet",
        *(f"bars/timeframe=1d/symbol={s}/year={YEAR}/part.parquet" for s in SYMBOLS),
        *(f"features/timeframe=1d/symbol={s}/year={YEAR}/part.parquet" for s in SYMBOLS),
        "research/backtest/equity.parquet",
        "research/backtest/orders.parquet",
        "research/backtest/metrics.json",
        "research/backtest/report/equity_drawdown.png",
        "research/backtest/report/index.html",
    }
    assert expected <= set(objects), sorted(expected - set(objects))
    assert not list((tmp_path / "local-lake").rglob("*")), "nothing goes to the local lake folder"

    assert read_bars(s3_lake, ["AAPL"], "1m").height == 210
    assert read_bars(s3_lake, SYMBOLS, "1d")["symbol"].unique().sort().to_list() == SYMBOLS
    [materialization] = backtest.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    metrics = json.loads((s3_lake / "research/backtest/metrics.json").read_bytes())
    assert round(metrics["total_return"], 4) == metadata["total_return"].value
    equity = pl.read_parquet((s3_lake / "research/backtest/equity.parquet").read_bytes())
    assert equity.height > 200 and equity["ts"].is_sorted()
    assert (s3_lake / "research/backtest/report/equity_drawdown.png").read_bytes().startswith(b"\x89PNG")
    assert metadata["report"].value == f"{s3_lake}/research/backtest/report/index.html"


def test_the_lake_resource_names_the_bucket_and_refuses_a_local_folder_for_it(s3_lake: ObjectPath) -> None:
    """What works on local files only (the demo's bulk ingest) asks for `path`: on an
    object-store lake that is an error naming the lake, not some other local folder."""
    from orchestration.run_context import ObservedLakeResource

    lake = ObservedLakeResource()
    assert lake.location == s3_lake
    with pytest.raises(LakeError, match=f"local folder.*{s3_lake}"):
        _ = lake.path
    assert ObservedLakeResource(root="/srv/lake").location == Path("/srv/lake")


def test_the_same_bars_as_a_local_lake(s3_lake: ObjectPath, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daily ingest job through the default resources writes the same bars to the bucket as to a local folder."""
    from assets.partitions import add_symbols, daily_key
    from orchestration.definitions import defs

    job = defs.resolve_job_def("ingest_daily_job")
    with dg.instance_for_test() as instance:
        add_symbols(instance, ["AAPL"])
        assert job.execute_in_process(partition_key=daily_key(YEAR, "AAPL"), instance=instance).success
        monkeypatch.delenv("QUANTLAKE_LAKE_URL")
        assert job.execute_in_process(partition_key=daily_key(YEAR, "AAPL"), instance=instance).success
    local = tmp_path / "local-lake"
    assert_frame_equal(read_bars(s3_lake, ["AAPL"], "1d"), read_bars(local, ["AAPL"], "1d"))
    for name in ("bars", "features"):
        key = f"{name}/timeframe=1d/symbol=AAPL/year={YEAR}/part.parquet"
        assert (s3_lake / key).read_bytes() == (local / key).read_bytes(), key


def test_the_news_job_writes_its_day_into_the_bucket(s3_lake: ObjectPath, tmp_path: Path) -> None:
    from lake.news.store import news_days, read_news
    from orchestration.definitions import defs

    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("ingest_news_job").execute_in_process(
            partition_key="2024-11-26", instance=instance, tags={"quantlake/now": "2024-12-02T12:00:00+00:00"}
        )
    assert result.success
    assert news_days(s3_lake) == [date(2024, 11, 26)]
    assert "news/date=2024-11-26/part.parquet" in _objects(s3_lake)
    [materialization] = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["path"].value == f"{s3_lake}/news/date=2024-11-26/part.parquet"
    stored = read_news(s3_lake, None, datetime(2024, 11, 27, 5, tzinfo=UTC), timedelta(days=1))
    assert stored.height > 0 and stored.height == materialization.materialization.metadata["dagster/row_count"].value
    assert not list((tmp_path / "local-lake").rglob("*"))
