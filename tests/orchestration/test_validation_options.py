"""The Dagster ingest validates with the configured jump threshold and the source's extended hours."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.partitions import add_symbols, intraday_key
from assets.resources import LakeResource, MarketDataResource
from lake.calendar import day_window, session_bounds
from lake.sources import SyntheticSource
from lake.store import QUARANTINE, read_bars, read_frame
from orchestration.resources import market_data_resource
from orchestration.settings import SettingsError, settings
from tests.fakes.alpaca_data_server import AlpacaDataState, alpaca_bars_from_frame, alpaca_data_server

DAY, SYMBOL = "2024-11-26", "AAPL"


def _run(key: dg.MultiPartitionKey, resources: dict[str, object]) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    with dg.instance_for_test() as instance:
        add_symbols(instance, [SYMBOL])
        return defs.resolve_job_def("ingest_intraday_job").execute_in_process(
            partition_key=key, instance=instance, resources=resources, raise_on_error=False
        )


def test_the_threshold_comes_from_the_environment_validated() -> None:
    assert market_data_resource(settings({})).max_jump == 10.0
    assert market_data_resource(settings({"QUANTLAKE_MAX_JUMP": "200"})).max_jump == 200.0
    with pytest.raises(SettingsError, match="QUANTLAKE_MAX_JUMP='1'"):
        settings({"QUANTLAKE_MAX_JUMP": "1"})


def test_alpaca_extended_hours_are_quarantined_without_blocking_and_the_threshold_applies(lake_root: Path) -> None:
    opened, closed = session_bounds(DAY)
    bars = SyntheticSource().fetch([SYMBOL], "1m", opened, closed)
    premarket = bars.head(1).with_columns(pl.lit(opened - timedelta(hours=2)).alias("ts"))  # 07:30 New York
    after = bars.tail(1).with_columns(pl.lit(closed + timedelta(hours=1)).alias("ts"))  # 17:00
    spiked = bars.with_columns(  # one bar 20x the others: blocks at 10x, not at 50x
        pl.when(pl.int_range(pl.len()) == 100).then(pl.col(c) * 20).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )
    state = AlpacaDataState(bars=alpaca_bars_from_frame(pl.concat([premarket, spiked, after])))
    assert day_window(DAY)[0] < opened - timedelta(hours=2)  # both inside the day's window, which is asked for
    with alpaca_data_server(state) as url:
        def resources(max_jump: float) -> dict[str, object]:
            source = MarketDataResource(source="alpaca", alpaca_api_key="PKTEST", alpaca_secret_key="s3cr3t", alpaca_url_override=url, max_jump=max_jump)
            return {"lake": LakeResource(root=str(lake_root)), "market_data": source}

        strict = _run(intraday_key(DAY, SYMBOL), resources(10.0))
        lenient = _run(intraday_key(DAY, SYMBOL), resources(50.0))
    checks = {e.check_name: e for e in strict.get_asset_check_evaluations()}
    assert not checks["price_jump"].passed and checks["price_jump"].metadata["failed_rows"].value == 2
    checks = {e.check_name: e for e in lenient.get_asset_check_evaluations()}
    assert lenient.success and checks["price_jump"].passed and checks["in_session"].passed
    assert not checks["extended_hours"].passed and checks["extended_hours"].metadata["failed_rows"].value == 2
    quarantine = read_frame(lake_root, QUARANTINE, "1m", [SYMBOL])
    assert quarantine["check"].to_list() == ["extended_hours"] * 2
    assert read_bars(lake_root, [SYMBOL], "1m").height == bars.height
