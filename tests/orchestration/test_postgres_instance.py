"""A job on a DagsterInstance backed by PostgreSQL (deploy/dagster.yaml), read back from storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import add_symbols, intraday_key
from assets.resources import LakeResource, MarketDataResource
from tests.orchestration.dagster_server import ROOT

pytestmark = pytest.mark.postgres


def test_ingest_partition_on_postgres_instance(
    pg_schema_url: str, lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.definitions import defs

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", pg_schema_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        add_symbols(instance, ["MSFT"])
        result = defs.resolve_job_def("ingest_intraday_job").execute_in_process(
            partition_key=intraday_key("2024-11-27", "MSFT"),
            instance=instance,
            resources={"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()},
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.is_success
        event = instance.get_latest_materialization_event(dg.AssetKey("bars_1m"))
        assert event is not None and event.run_id == result.run_id
        mat = event.asset_materialization
        assert mat is not None and mat.partition == "2024-11-27|MSFT"
        assert mat.metadata["dagster/row_count"].value == 390
