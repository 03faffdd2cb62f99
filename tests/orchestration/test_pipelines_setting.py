"""QUANTLAKE_PIPELINES: a plan of several pipelines, named once in the environment, reaches every decide
run that names none in its config (the schedule's runs, `quantlake decide`) through the settings passed
down; a bad plan fails the settings naming the variable, the file and the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import time_machine

from assets.clock import SCHEDULED_TAG
from assets.resources import LakeResource, TradingResource
from lake.calendar import get_calendar
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from orchestration.settings import SettingsError, settings
from trading.accounts import PIPELINE_KEY, configured_plan_file
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "JPM"]
STRATEGY = "tests.trading.always_long:ALWAYS_LONG"
TICK = datetime.combine(datetime(2023, 12, 21).date(), time(11, 0), tzinfo=get_calendar().tz)  # a decision_schedule time


def _plan(tmp_path: Path) -> Path:
    (tmp_path / "cautious.yaml").write_text(json.dumps({"name": "cautious", "limits": {"max_position_pct": 0.05, "max_sector_pct": 1.0}}))
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"pipelines": [{"id": "cautious", "file": "cautious.yaml", "capital": 0.6}, {"id": "bold", "capital": 0.4}]}))
    return plan


def _lake(root: Path) -> None:
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", daily, period="year")


def _pipelines_in(ledger_url: str) -> set[str | None]:
    with Ledger(ledger_url) as ledger:
        return {e.payload.get(PIPELINE_KEY) for e in ledger.events(types=[EventType.DECISION.value])}


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"pipelines": [{"id": "a", "capital": 0.7}, {"id": "b", "capital": 0.5}]}, "shares of the account add up to 1.2"),
        ({"pipelines": [{"id": "a", "capital": -1}]}, "pipelines.0.capital: Input should be greater than 0"),
        ({"pipelines": [{"id": "A B", "capital": 0.5}]}, "pipelines.0.id: String should match pattern"),
        ({"pipelines": [{"id": "a", "capital": 0.5, "budget": 3}]}, "pipelines.0.budget: Extra inputs are not permitted"),
    ],
)
def test_a_bad_plan_is_named_with_its_file_and_field(plan: dict[str, Any], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Named when a run asks for the plan (what the decide and end-of-day runs do)."""
    file = tmp_path / "plan.yaml"
    file.write_text(json.dumps(plan))
    monkeypatch.setenv("QUANTLAKE_PIPELINES", str(file))
    with pytest.raises(SettingsError) as raised:
        configured_plan_file()
    assert str(raised.value).startswith(f"QUANTLAKE_PIPELINES='{file}'") and f"pipelines plan {file}: " in str(raised.value)
    assert message in str(raised.value)
    assert settings().pipelines_plan_file == file, "the rest of the settings still load: the kill switch reads them"


def test_a_missing_plan_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_PIPELINES", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(SettingsError, match=r"QUANTLAKE_PIPELINES=.*pipelines plan .*nowhere\.yaml: No such file"):
        configured_plan_file()


def test_a_bad_plan_fails_the_decide_run_once_naming_it(lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.definitions import defs

    _lake(lake_root)
    (tmp_path / "plan.yaml").write_text(json.dumps({"pipelines": [{"id": "a", "capital": 2, "paused": "sometimes"}]}))
    monkeypatch.setenv("QUANTLAKE_PIPELINES", str(tmp_path / "plan.yaml"))
    config = {"strategy": STRATEGY, "symbols": SYMBOLS, "as_of": "2023-12-20T14:30:00+00:00"}
    trading = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    run = defs.resolve_job_def("decide_job").execute_in_process(
        run_config={"ops": {"decision_cycle": {"config": config}}}, resources={"lake": LakeResource(root=str(lake_root)), "trading": trading},
        tags={SCHEDULED_TAG: TICK.isoformat()}, raise_on_error=False,
    )
    assert not run.success
    [failure] = run.get_step_failure_events()
    assert "pipelines.0.paused" in str(failure.event_specific_data.error)  # type: ignore[union-attr]
    assert len(run.filter_events(lambda e: e.event_type_value == "STEP_RESTARTED")) == 0, "never retried"


def test_the_plan_is_kept_absolute_and_unset_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step process may start in another working directory: the path it is handed is absolute."""
    _plan(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert settings({"QUANTLAKE_PIPELINES": "plan.yaml"}).pipelines_plan_file == tmp_path / "plan.yaml"
    assert settings({}).pipelines_plan_file is None


def test_the_scheduled_decide_run_trades_the_plan_the_setting_names(lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision schedule's run request, executed as decide_job: each pipeline of the plan decides on its
    own sub-account, with no plan in the run config."""
    from orchestration.definitions import defs

    _lake(lake_root)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", ledger_url)
    monkeypatch.setenv("QUANTLAKE_STRATEGY", STRATEGY)
    monkeypatch.setenv("QUANTLAKE_PIPELINES", str(_plan(tmp_path)))
    with dg.build_schedule_context(scheduled_execution_time=TICK, repository_def=defs.get_repository_def()) as ctx:
        [request] = defs.resolve_schedule_def("decision_schedule").evaluate_tick(ctx).run_requests or []
    config = request.run_config
    assert "pipelines" not in config["ops"]["decision_cycle"]["config"], "the plan comes from the setting, not the request"
    config["ops"]["decision_cycle"]["config"]["symbols"] = SYMBOLS
    trading = TradingResource(mode="simulation", ledger_url=ledger_url, sim_state_file=str(tmp_path / "sim.json"))
    run = defs.resolve_job_def("decide_job").execute_in_process(
        run_config=config, resources={"lake": LakeResource(root=str(lake_root)), "trading": trading}, tags={**request.tags, SCHEDULED_TAG: TICK.isoformat()}
    )
    assert run.success
    [mat] = run.asset_materializations_for_node("decision_cycle")
    assert mat.metadata["equity_per_pipeline"].value == {"cautious": 60_000.0, "bold": 40_000.0}
    assert mat.metadata["orders_sent"].value == 2 * len(SYMBOLS)
    assert mat.metadata["plan"].value == str(tmp_path / "plan.yaml")
    assert _pipelines_in(ledger_url) == {"cautious", "bold"}
    assert {p.stem for p in tmp_path.glob("sim.*.json")} == {"sim.cautious", "sim.bold"}, "each pipeline's own simulated book"


def test_quantlake_decide_trades_the_plan_the_setting_names(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestration.cli import main

    _lake(lake_root)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", ledger_url)
    monkeypatch.setenv("QUANTLAKE_PIPELINES", str(_plan(tmp_path)))
    with time_machine.travel(TICK, tick=True):  # the CLI's run clock is the machine's: a session's morning
        code = main(["decide", "--strategy", STRATEGY, "--symbols", ",".join(SYMBOLS), "--as-of", "2023-12-20T14:30:00+00:00"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| pipeline | symbol | verdict |" in out and "| cautious |" in out and "| bold |" in out
    assert _pipelines_in(ledger_url) == {"cautious", "bold"}


def test_the_scheduled_end_of_day_flattens_every_book_of_the_plan_the_setting_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end-of-day schedule's request names no plan either: each pipeline's simulated book is flattened."""
    from orchestration.definitions import defs
    from tests.orchestration.test_pipelines_side_by_side import (
        DECISION_BAR,
        LATER_BAR,
        _at_eleven,
        _decide,
        _setup,
    )
    from tests.orchestration.test_pipelines_side_by_side import SYMBOLS as HELD

    lake, trading, plan = _setup(tmp_path)
    _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
    _decide(lake, trading, plan, LATER_BAR, _at_eleven(26))  # both pipelines hold every symbol now
    monkeypatch.setenv("QUANTLAKE_PIPELINES", str(plan))
    tick = _at_eleven(26).replace(hour=16, minute=5)  # after the close
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as ctx:
        [request] = defs.resolve_schedule_def("end_of_day_schedule").evaluate_tick(ctx).run_requests or []
    config = request.run_config
    assert "pipelines" not in config["ops"]["end_of_day_report"]["config"]
    config["ops"]["end_of_day_report"]["config"]["symbols"] = HELD
    run = defs.resolve_job_def("end_of_day_job").execute_in_process(
        run_config=config, resources={"lake": lake, "trading": trading}, tags={**request.tags, SCHEDULED_TAG: tick.isoformat()}
    )
    assert run.success
    [mat] = run.asset_materializations_for_node("end_of_day_report")
    assert mat.metadata["flattened_orders"].value == 2 * len(HELD)
    with Ledger(trading.ledger_url) as ledger:
        flattens = [e.payload[PIPELINE_KEY] for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "flatten"]
    assert sorted(flattens) == ["bold", "cautious"]
