"""Partitions grow with time and with the universe, without reloading the code location."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import time_machine

from assets.partitions import add_symbols, daily_key, default_starts, intraday_key
from assets.resources import LakeResource, MarketDataResource
from lake.calendar import trading_days
from lake.store import read_bars

NY = ZoneInfo("America/New_York")


def _ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


@pytest.fixture
def loaded_on_jan_2(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """orchestration.definitions imported afresh on 2026-01-02 at 10:00 New York, default start."""
    monkeypatch.delenv("QUANTLAKE_PARTITION_START", raising=False)
    ours = ("assets", "orchestration")
    saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] in ours}
    for name in saved:
        del sys.modules[name]
    try:
        with time_machine.travel(_ny(2026, 1, 2, 10, 0), tick=False):
            import orchestration.definitions as loaded
        yield loaded
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in ours]:
            del sys.modules[name]
        sys.modules.update(saved)
        # The fresh import pointed the lower layers' hooks (partitions, screener, the plan source) at its own
        # settings module: point them back, or later tests get the other module's SettingsError class.
        saved["orchestration.settings"].pass_settings_down()  # type: ignore[attr-defined]


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, schedule: str, at: datetime) -> list[dg.RunRequest]:
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()) as ctx:
        data = defs.resolve_schedule_def(schedule).evaluate_tick(ctx)
    assert data.run_requests, data.skip_message
    return list(data.run_requests)


def _execute(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, key: dg.MultiPartitionKey, lake: Path) -> dg.ExecuteInProcessResult:
    resources = {"lake": LakeResource(root=str(lake)), "market_data": MarketDataResource()}
    return defs.resolve_job_def(job).execute_in_process(partition_key=key, instance=instance, resources=resources, raise_on_error=False)


def test_a_location_loaded_in_january_runs_march_and_the_next_year(loaded_on_jan_2: ModuleType, tmp_path: Path) -> None:
    defs: dg.Definitions = loaded_on_jan_2.defs
    from assets.partitions import intraday_partitions, trading_day_partitions, years_partitions

    first_day, first_year = default_starts(_ny(2026, 1, 2, 10, 0))
    with time_machine.travel(_ny(2026, 1, 2, 10, 0), tick=False):
        days = trading_day_partitions.get_partition_keys()
        assert days == [d.isoformat() for d in trading_days(first_day, "2026-01-02")]  # no weekend, no holiday
        assert len(days) == 21 and "2026-01-01" not in days and "2025-12-25" not in days
        assert years_partitions.get_partition_keys() == ["2024", "2025", "2026"] and first_year == 2024  # 2024-12-31 on
        assert "2026-03-02" not in days

    lake = tmp_path / "lake"
    with dg.instance_for_test() as instance:
        with time_machine.travel(_ny(2026, 3, 2, 16, 30), tick=False):
            [request] = [r for r in _tick(defs, instance, "market_close_schedule", _ny(2026, 3, 2, 16, 5)) if "AAPL" in str(r.partition_key)]
            assert request.partition_key == "2026-03-02|AAPL"
            assert _execute(defs, instance, "ingest_intraday_job", intraday_key("2026-03-02", "AAPL"), lake).success
            assert "2026-03-02|AAPL" in intraday_partitions.get_partition_keys(dynamic_partitions_store=instance)

        with time_machine.travel(_ny(2027, 1, 4, 9, 40), tick=False):  # the first session of 2027
            requests = _tick(defs, instance, "market_open_schedule", _ny(2027, 1, 4, 9, 35))
            assert {str(r.partition_key) for r in requests if "AAPL" in str(r.partition_key)} == {"AAPL|2026"}  # Dec 31's bar
            assert _execute(defs, instance, "ingest_daily_job", daily_key("2026", "AAPL"), lake).success
        with time_machine.travel(_ny(2027, 1, 4, 16, 30), tick=False):
            assert _tick(defs, instance, "market_close_schedule", _ny(2027, 1, 4, 16, 5))
            assert _execute(defs, instance, "ingest_intraday_job", intraday_key("2027-01-04", "AAPL"), lake).success
            assert _execute(defs, instance, "ingest_daily_job", daily_key("2027", "AAPL"), lake).success
            assert years_partitions.get_partition_keys()[-1] == "2027"

    daily = read_bars(lake, ["AAPL"], "1d")
    assert daily["ts"].dt.year().unique().sort().to_list() == [2026, 2027]
    assert daily.height == len(trading_days("2026-01-01", "2027-01-04"))
    assert read_bars(lake, ["AAPL"], "1m")["ts"].dt.date().unique().sort().to_list() == [date(2026, 3, 2), date(2027, 1, 4)]


def test_the_universe_changes_without_a_reload_and_a_dropped_symbol_keeps_its_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assets.partitions import intraday_partitions
    from orchestration.definitions import defs

    lake = tmp_path / "lake"
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,MSFT")
        for request in _tick(defs, instance, "market_close_schedule", _ny(2024, 11, 27, 16, 5)):
            assert _execute(defs, instance, "ingest_intraday_job", request.partition_key, lake).success  # type: ignore[arg-type]

        monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,TSLA")  # TSLA in, MSFT out: same Definitions object
        requests = _tick(defs, instance, "market_close_schedule", _ny(2024, 11, 29, 13, 5))
        assert sorted(str(r.partition_key) for r in requests) == ["2024-11-29|AAPL", "2024-11-29|TSLA"]
        assert _execute(defs, instance, "ingest_intraday_job", intraday_key("2024-11-29", "TSLA"), lake).success
        assert instance.get_dynamic_partitions("symbols") == ["AAPL", "MSFT", "TSLA"]

        # MSFT's partitions, materializations and bars stay; it can still be re-run by hand.
        assert "2024-11-27|MSFT" in intraday_partitions.get_partition_keys(dynamic_partitions_store=instance)
        assert instance.get_materialized_partitions(dg.AssetKey("bars_1m")) >= {"2024-11-27|MSFT", "2024-11-29|TSLA"}
        assert read_bars(lake, ["MSFT"], "1m").height == 390
        assert _execute(defs, instance, "ingest_intraday_job", intraday_key("2024-11-26", "MSFT"), lake).success


def test_add_symbols_is_idempotent() -> None:
    with dg.instance_for_test() as instance:
        assert add_symbols(instance, ["MSFT", "AAPL"]) == ["AAPL", "MSFT"]
        assert add_symbols(instance, ["AAPL", "MSFT"]) == []
        assert instance.get_dynamic_partitions("symbols") == ["AAPL", "MSFT"]


@pytest.mark.parametrize("now", [_ny(2026, 1, 2, 10, 0), _ny(2026, 11, 29, 10, 0), datetime(2028, 11, 29, 15, 0, tzinfo=UTC)])
def test_the_default_start_is_where_the_demos_data_starts(now: datetime) -> None:
    from orchestration.demo import default_ranges, last_closed_session

    days, years = default_ranges(last_closed_session(now))
    assert default_starts(now) == (days[0], int(years[0]))


def test_a_range_before_the_partition_start_is_a_clear_error() -> None:
    from orchestration.definitions import defs
    from orchestration.demo import IngestSummary, run_partitions

    with dg.instance_for_test() as instance, pytest.raises(ValueError, match="2021-12-31.*QUANTLAKE_PARTITION_START"):
        run_partitions(defs, instance, [date(2021, 12, 31)], [], ["AAPL"], IngestSummary(), progress=False)
        assert instance.get_dynamic_partitions("symbols") == []
