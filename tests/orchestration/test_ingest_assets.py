"""Ingest assets materialized in-process: lake files, checks, quarantine, idempotency."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.partitions import add_symbols, daily_key, intraday_key
from assets.resources import LakeResource, MarketDataResource

DAY, SYMBOL = "2024-11-29", "AAPL"  # a half day: 210 one-minute bars


def _run(job_name: str, key: dg.MultiPartitionKey, resources: dict[str, object], tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    job = defs.resolve_job_def(job_name)
    with dg.instance_for_test() as instance:
        add_symbols(instance, [key.keys_by_dimension["symbol"]])
        return job.execute_in_process(partition_key=key, instance=instance, resources=resources, raise_on_error=False, tags=tags)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_intraday_partition_writes_bars_derived_and_passes_blocking_checks(lake_root: Path) -> None:
    resources = {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()}
    result = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["ohlc_consistent"].passed and checks["not_null"].passed
    from lake.store import read_bars

    bars = read_bars(lake_root, [SYMBOL], "1m", None, None)
    assert bars.height == 210  # half day: 09:30-13:00 ET
    hourly = read_bars(lake_root, [SYMBOL], "1h", None, None, dataset="resampled")
    assert hourly["volume"].sum() == pytest.approx(bars["volume"].sum())

    first = _digest(lake_root)
    again = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources)
    assert again.success
    assert _digest(lake_root) == first, "re-materializing a partition must replace it exactly"


def test_daily_partition_covers_the_years_sessions(lake_root: Path) -> None:
    resources = {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()}
    result = _run("ingest_daily_job", daily_key("2024", SYMBOL), resources)
    assert result.success
    from lake.store import read_bars

    bars = read_bars(lake_root, [SYMBOL], "1d", None, None)
    assert bars.height == 252
    features = pl.read_parquet(next((lake_root / "features").rglob("*.parquet")))
    assert features.height == 252 and features["rsi_14"].null_count() < 20


def test_bad_rows_fail_the_blocking_check_go_to_quarantine_and_stop_downstream(lake_root: Path, tmp_path: Path) -> None:
    from lake.calendar import session_bounds
    from lake.sources import SyntheticSource

    start, end = session_bounds(DAY)
    bars = SyntheticSource().fetch([SYMBOL], "1m", start, end)
    bad = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 17).then(pl.col("low") - 5.0).otherwise(pl.col("high")).alias("high")
    )
    csv = tmp_path / "aapl.csv"
    bad.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)).write_csv(csv)
    resources = {
        "lake": LakeResource(root=str(lake_root)),
        "market_data": MarketDataResource(source="files", files_glob=str(csv)),
    }
    result = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["ohlc_consistent"].passed
    assert checks["ohlc_consistent"].metadata["failed_rows"].value == 1
    quarantine = pl.read_parquet(next((lake_root / "quarantine").rglob("*.parquet")))
    assert quarantine.height == 1 and "high" in quarantine["reason"][0]
    assert not (lake_root / "resampled").exists(), "a failed blocking check must stop the derived assets"
    from lake.store import read_bars

    assert read_bars(lake_root, [SYMBOL], "1m", None, None).height == 209


def test_a_run_as_of_a_moment_ingests_only_what_had_happened_by_then(lake_root: Path) -> None:
    """The `quantlake/now` tag (or a schedule's firing time) is the run's clock, not the machine's."""
    from lake.calendar import session_bounds, trading_days
    from lake.store import read_bars

    resources = {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()}
    opened = session_bounds(DAY)[0]  # 14:30 UTC
    mid = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources, tags={"quantlake/now": f"{DAY}T15:00:30+00:00"})
    assert mid.success
    bars = read_bars(lake_root, [SYMBOL], "1m", None, None)
    assert bars.height == 30 and bars["ts"].min() == opened  # 14:30 to 14:59: the minutes that had closed

    early = _run("ingest_daily_job", daily_key("2024", "MSFT"), resources, tags={"dagster/scheduled_execution_time": "2024-06-03T12:00:00+00:00"})
    assert early.success
    daily = read_bars(lake_root, ["MSFT"], "1d", None, None)
    assert daily.height == len(trading_days("2024-01-01", "2024-05-31"))  # sessions closed before that morning

    bad = _run("ingest_daily_job", daily_key("2024", "MSFT"), resources, tags={"quantlake/now": "2024-06-03 noon"})
    assert not bad.success
    [failure] = bad.get_step_failure_events()
    assert "is not an ISO time" in failure.step_failure_data.error.message  # type: ignore[union-attr]
