"""Trading orchestration: decision and end-of-day schedules on the calendar, halts skip runs, sensors launch once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from assets import trading
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from trading.events import EventType
from trading.ledger import Ledger

NY = ZoneInfo("America/New_York")
WEEK_START = datetime(2024, 11, 25, 0, 0, tzinfo=NY)  # Thu 28th: holiday; Fri 29th: closes 13:00
WEEK_END = datetime(2024, 11, 30, 0, 0, tzinfo=NY)


@pytest.fixture
def ledger_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", url)
    return url


def _ticks(name: str) -> list[tuple[datetime, dg.SensorResult | dg.ScheduleExecutionData]]:
    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def(name)
    crons = schedule.cron_schedule if isinstance(schedule.cron_schedule, list) else [schedule.cron_schedule]
    ticks: set[datetime] = set()
    for cron in crons:
        for tick in cron_string_iterator(WEEK_START.timestamp(), cron, "America/New_York"):
            if tick >= WEEK_END:
                break
            ticks.add(tick)
    out = []
    for tick in sorted(ticks):
        with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as ctx:
            out.append((tick.astimezone(NY).replace(tzinfo=None), schedule.evaluate_tick(ctx)))
    return out


def _fired(name: str) -> list[datetime]:
    return [t for t, data in _ticks(name) if data.run_requests]  # type: ignore[union-attr]


@pytest.mark.usefixtures("ledger_url")
def test_decision_schedule_fires_at_fixed_times_and_at_the_windows_end_and_skips_the_holiday() -> None:
    days = (25, 26, 27, 29)  # the half day (29th) closes at 13:00: its 14:30 tick is dropped, its window ends at 12:55
    expected = [datetime(2024, 11, d, 11, 0) for d in days] + [datetime(2024, 11, d, 14, 30) for d in (25, 26, 27)]
    flatten = [datetime(2024, 11, d, 15, 55) for d in (25, 26, 27)] + [datetime(2024, 11, 29, 12, 55)]
    assert _fired("decision_schedule") == sorted(expected + flatten)
    requests = [r for _, data in _ticks("decision_schedule") for r in (data.run_requests or [])]  # type: ignore[union-attr]
    assert len({r.run_key for r in requests}) == len(requests) == 11
    assert all(r.tags["quantlake/mode"] == "validation" for r in requests)
    assert sum(r.tags.get("quantlake/purpose") == "flatten" for r in requests) == 4


@pytest.mark.usefixtures("ledger_url")
def test_end_of_day_schedule_follows_the_close() -> None:
    assert _fired("end_of_day_schedule") == [datetime(2024, 11, d, 16, 5) for d in (25, 26, 27)] + [datetime(2024, 11, 29, 13, 5)]
    [(_, data)] = [(t, d) for t, d in _ticks("end_of_day_schedule") if t == datetime(2024, 11, 29, 13, 5)]
    [request] = data.run_requests  # type: ignore[union-attr,misc]
    assert request.run_config["ops"]["end_of_day_report"]["config"]["day"] == "2024-11-29"


def test_a_halt_skips_trading_runs_with_the_reason_until_resumed(ledger_url: str) -> None:
    from orchestration.definitions import defs

    kill = defs.resolve_job_def("kill_switch_job").execute_in_process(
        run_config={"ops": {"kill_switch_op": {"config": {"reason": "broker outage"}}}}, resources={"trading": TradingResource(ledger_url=ledger_url)}
    )
    assert kill.success
    skipped = [data for t, data in _ticks("decision_schedule") if t.day == 25 and t.hour in (11, 14)]
    assert skipped and all(not d.run_requests and "broker outage" in (d.skip_message or "") for d in skipped)  # type: ignore[union-attr]
    # The window's end still runs while halted: it flattens what a halt left open.
    [(_, flattening)] = [(t, data) for t, data in _ticks("decision_schedule") if t == datetime(2024, 11, 25, 15, 55)]
    assert flattening.run_requests  # type: ignore[union-attr]
    resume = defs.resolve_job_def("resume_job").execute_in_process(
        run_config={"ops": {"resume_op": {"config": {"by": "alice"}}}}, resources={"trading": TradingResource(ledger_url=ledger_url)}
    )
    assert resume.success
    assert _fired("decision_schedule")
    with Ledger(ledger_url) as ledger:
        assert [e.payload["kind"] for e in ledger.events(types=[EventType.INTERVENTION.value])] == ["kill_switch", "resume"]


def test_end_of_day_report_from_the_ledger(tmp_path: Path, ledger_url: str) -> None:
    root = tmp_path / "lake"
    symbols = ["AAPL", "MSFT", "NVDA"]
    bars = SyntheticSource(seed=7).fetch(symbols, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    lake = LakeResource(root=str(root))
    resources = {"lake": lake, "trading": TradingResource(ledger_url=ledger_url)}
    decided = dg.materialize(
        [trading.decision_cycle], resources=resources, run_config={"ops": {"decision_cycle": {"config": {"symbols": symbols, "as_of": "2024-03-06T14:30:00+00:00"}}}}
    )
    assert decided.success
    result = dg.materialize(
        [trading.end_of_day_report], resources=resources, run_config={"ops": {"end_of_day_report": {"config": {"day": "2024-03-06", "symbols": symbols}}}}
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["decisions"].value == 3 and meta["equity"].value == 100_000.0
    report = (root / "reports" / "eod" / "2024-03-06.md").read_text()
    assert report.startswith("# End of day 2024-03-06") and "3 decisions" in report


def _bars_event(instance: dg.DagsterInstance, last_ts: str, quarantined: int, partition: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="bars_1d", partition=partition, metadata={"last_ts": last_ts, "quarantined_rows": quarantined})
    )


@pytest.mark.usefixtures("ledger_url")
def test_new_validated_bars_launch_one_decision_run_per_bar() -> None:
    from orchestration.definitions import defs

    sensor = defs.resolve_sensor_def("new_daily_bars_sensor")
    with dg.instance_for_test() as instance:
        keys = []
        cursor = None
        for symbol, last, bad in [("AAPL", "2024-03-06 14:30", 0), ("MSFT", "2024-03-06 14:30", 0), ("NVDA", "2024-03-07 14:30", 3)]:
            _bars_event(instance, last, bad, f"2024|{symbol}")
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def())
            result = sensor.evaluate_tick(ctx)
            cursor = result.cursor
            keys += [r.run_key for r in result.run_requests]
            if bad:
                assert "failed validation" in (result.skip_message or "")
    assert keys == ["decide|1d|2024-03-06 14:30", "decide|1d|2024-03-06 14:30"]  # Dagster drops the repeated run_key


def test_price_move_sensor_records_a_baseline_then_fires_on_a_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger_url: str) -> None:
    from orchestration.definitions import defs

    root = tmp_path / "lake"
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(root))
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL")
    monkeypatch.setenv("QUANTLAKE_MOVE_TIMEFRAME", "1d")
    bars = SyntheticSource(seed=1).fetch(["AAPL"], "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    sensor = defs.resolve_sensor_def("price_move_sensor")
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()))
        assert not first.run_requests and "baseline" in (first.skip_message or "")
        baseline = json.loads(first.cursor or "{}")
        quiet = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor, repository_def=defs.get_repository_def()))
        assert not quiet.run_requests
        baseline["AAPL"][1] *= 0.9  # as if the last trigger saw a price 10 % lower
        moved = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=json.dumps(baseline), repository_def=defs.get_repository_def()))
        [request] = moved.run_requests
        assert request.run_key.startswith("move|AAPL@") and "+11.11%" in request.tags["quantlake/moved"]
