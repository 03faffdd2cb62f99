"""The daemon evaluates every sensor and schedule many times a day (a year's soak: ~1,900 ticks). One
that declares a resource makes Dagster build it, and validate its config schema, at each evaluation
(`wrap_sensor_evaluation` reads `context.resources` first): ~15-30 ms of CPU for the trading and market
data resources, whether or not the evaluation needs them. Ours build what they need, when they need it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

import orchestration.resources
from assets.resources import TradingResource
from orchestration.definitions import defs
from orchestration.settings import Settings

REPO = defs.get_repository_def()


@pytest.mark.parametrize("sensor", REPO.sensor_defs, ids=lambda s: s.name)
def test_no_sensor_has_dagster_build_resources_at_each_evaluation(sensor: dg.SensorDefinition) -> None:
    assert sensor.required_resource_keys == set()


@pytest.mark.parametrize("schedule", REPO.schedule_defs, ids=lambda s: s.name)
def test_no_schedule_has_dagster_build_resources_at_each_evaluation(schedule: dg.ScheduleDefinition) -> None:
    assert schedule.required_resource_keys == set()


@pytest.mark.parametrize("mode", ["validation", "simulation"])
def test_the_trade_managers_skip_builds_no_resource(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside paper and live (the soak, a research deployment) the trade manager's evaluation only reads
    the mode: neither resource is built."""

    def built(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a resource was built for a skip")

    monkeypatch.setenv("QUANTLAKE_MODE", mode)
    monkeypatch.setattr(orchestration.resources, "trading_resource", built)
    monkeypatch.setattr(orchestration.resources, "market_data_resource", built)
    sensor = defs.resolve_sensor_def("trade_manager_sensor")
    result = sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))
    assert isinstance(result, dg.SkipReason) and result.skip_message == f"mode {mode}: no Alpaca orders to manage"


@pytest.mark.parametrize("name", ["intervention_alert_sensor", "daily_pnl_summary_sensor"])
def test_the_alert_sensors_build_the_trading_resource_once_per_settings(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each evaluation reads the ledger the settings of the moment name; the resource is built once
    for the same settings and again when they change."""
    real = orchestration.resources.trading_resource
    built: list[str] = []

    def counted(env: Settings | None = None) -> TradingResource:
        resource = real(env)
        built.append(resource.ledger_url)
        return resource

    monkeypatch.setattr(orchestration.resources, "trading_resource", counted)
    sensor = defs.resolve_sensor_def(name)
    instance = dg.DagsterInstance.ephemeral()

    def tick(ledger: Path) -> str:
        monkeypatch.setenv("QUANTLAKE_LEDGER_URL", f"sqlite:///{ledger}")
        result = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SkipReason) and result.skip_message
        return result.skip_message

    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    assert [tick(first), tick(first), tick(first)] == [f"no ledger yet at {first}"] * 3
    assert tick(second) == f"no ledger yet at {second}"
    assert built == [f"sqlite:///{first}", f"sqlite:///{second}"]
