"""Each safety control fires through decide_job (and the decision schedule), in simulation mode on the
offline lake's 1-minute bars, at fixed run clocks (the quantlake/now tag or the schedule's tick).

The strategy wants every symbol long on every bar (tests/trading/always_long.py), so what is sent is
the controls' doing; a loss is made by marking two symbols' bars down from 10:30 on 2024-11-25.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
import pytest

from assets import trading
from assets.clock import NOW_TAG, SCHEDULED_TAG
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio

NY = ZoneInfo("America/New_York")
STRATEGY = "tests.trading.always_long:ALWAYS_LONG"
SYMBOLS = ["AAPL", "MSFT", "NVDA", "JPM", "GOOG"]
FALLING = ["AAPL", "MSFT"]  # marked down from CRASH_AT
CRASH_AT = datetime(2024, 11, 25, 10, 30, tzinfo=NY)


def _lake(root: Path, crash: float) -> LakeResource:
    bars = SyntheticSource(seed=7).fetch(SYMBOLS, "1m", datetime(2024, 11, 25, tzinfo=UTC), datetime(2024, 12, 3, tzinfo=UTC))
    hit = pl.col("symbol").is_in(FALLING) & (pl.col("ts") >= CRASH_AT.astimezone(UTC))
    bars = bars.with_columns(*(pl.when(hit).then(pl.col(c) * crash).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "vwap")))
    replace_partitions(root, "bars", "1m", bars, period="date")
    return LakeResource(root=str(root))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return _lake(tmp_path_factory.mktemp("lake"), 0.85)  # 36 % of the account in the two: about -5.4 %


@pytest.fixture(scope="module")
def crashing_lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return _lake(tmp_path_factory.mktemp("crash"), 0.5)  # about -18 %


def _resource(tmp_path: Path, **limits: Any) -> TradingResource:
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(json.dumps({"limits": limits}))
    return TradingResource(mode="simulation", ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", sim_state_file=str(tmp_path / "sim.json"), pipeline_file=str(pipeline))


def _decide(lake: LakeResource, resource: TradingResource, now: datetime, symbols: list[str]) -> dict[str, Any]:
    """One decide_job run (the decision_cycle asset in process) at the run clock `now`."""
    result = dg.materialize(
        [trading.decision_cycle],
        resources={"lake": lake, "trading": resource},
        run_config={"ops": {"decision_cycle": {"config": {"strategy": STRATEGY, "symbols": symbols, "timeframe": "1m"}}}},
        tags={NOW_TAG: now.isoformat()},
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _ledger(resource: TradingResource) -> Ledger:
    return Ledger(resource.ledger_url)


def _orders(resource: TradingResource) -> list[str]:
    with _ledger(resource) as ledger:
        return [str(e.symbol) for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value])]


def _interventions(resource: TradingResource) -> list[tuple[str, str]]:
    with _ledger(resource) as ledger:
        return [(e.payload["kind"], e.payload.get("session", "")) for e in ledger.events(types=[EventType.INTERVENTION.value])]


def _holds(resource: TradingResource, symbol: str) -> list[str]:
    with _ledger(resource) as ledger:
        return [e.payload["rationale"] for e in ledger.events(types=[EventType.DECISION.value], symbol=symbol) if e.payload["verdict"] == "HOLD"]


def _at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=NY)


def test_daily_loss_trips_after_a_loss_in_the_session_and_blocks_new_risk_until_the_next(lake: LakeResource, tmp_path: Path) -> None:
    resource = _resource(tmp_path, daily_loss_limit_pct=0.02, max_drawdown_pct=0.5)
    first = _decide(lake, resource, _at(25, 10), FALLING)
    assert first["orders_sent"] == 2 and first["equity"] == 100_000.0  # the session's opening mark
    after = _decide(lake, resource, _at(25, 11), [*FALLING, "NVDA"])  # filled at 10:00, marked down at 10:30
    assert after["equity"] < 98_000 and after["orders_sent"] == 0
    assert any(i.startswith("daily_loss: daily loss") for i in after["interventions"])
    assert _decide(lake, resource, _at(25, 14), [*FALLING, "NVDA"])["orders_sent"] == 0  # still this session
    assert all("daily loss limit" in why for why in _holds(resource, "NVDA"))
    assert _orders(resource) == FALLING
    next_session = _decide(lake, resource, _at(26, 11), [*FALLING, "NVDA"])  # held symbols too: their marks value the book
    assert next_session["orders_sent"] == 1 and _orders(resource) == [*FALLING, "NVDA"]
    assert _interventions(resource) == [("daily_loss", "2024-11-25")]


def test_drawdown_trips_and_holds_until_an_explicit_resume(crashing_lake: LakeResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.definitions import defs

    resource = _resource(tmp_path, daily_loss_limit_pct=0.9, max_drawdown_pct=0.1)
    assert _decide(crashing_lake, resource, _at(25, 10), FALLING)["orders_sent"] == 2
    tripped = _decide(crashing_lake, resource, _at(25, 11), [*FALLING, "NVDA"])
    assert any(i.startswith("drawdown: drawdown") for i in tripped["interventions"]) and tripped["orders_sent"] == 0
    held = _decide(crashing_lake, resource, _at(26, 11), [*FALLING, "NVDA"])  # a new session does not lift it
    assert held["orders_sent"] == 0 and "drawdown" in str(held["blocked"])
    # The schedule skips while halted, with the reason.
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", resource.ledger_url)
    schedule = defs.resolve_schedule_def("decision_schedule")
    with dg.build_schedule_context(scheduled_execution_time=_at(26, 14, 30), repository_def=defs.get_repository_def()) as ctx:
        data = schedule.evaluate_tick(ctx)
    assert not data.run_requests and "drawdown" in (data.skip_message or "")
    resumed = defs.resolve_job_def("resume_job").execute_in_process(
        run_config={"ops": {"resume_op": {"config": {"by": "alice"}}}}, resources={"trading": resource}, tags={NOW_TAG: _at(26, 13).isoformat()}
    )
    assert resumed.success
    assert _decide(crashing_lake, resource, _at(26, 14), [*FALLING, "NVDA"])["orders_sent"] == 1  # the peak counts from the resume
    assert [k for k, _ in _interventions(resource) if k != "blocked"] == ["drawdown", "resume"]


def test_entries_outside_the_trading_window_are_refused(lake: LakeResource, tmp_path: Path) -> None:
    resource = _resource(tmp_path, window_open_delay_min=30)  # entries from 10:00
    early = _decide(lake, resource, _at(26, 9, 45), ["JPM"])
    assert early["execute"] == 1 and early["orders_sent"] == 0
    assert early["blocked"] == "outside the trading window 10:00-15:55 America/New_York on 2024-11-26 (now 09:45)"
    holiday = _decide(lake, resource, _at(28, 11), ["JPM"])  # Thanksgiving
    assert holiday["orders_sent"] == 0 and "not a XNYS session" in str(holiday["blocked"])
    assert _decide(lake, resource, _at(26, 10, 1), ["JPM"])["orders_sent"] == 1
    assert [k for k, _ in _interventions(resource)] == ["blocked", "blocked"]


def test_trades_per_day(lake: LakeResource, tmp_path: Path) -> None:
    resource = _resource(tmp_path, max_trades_per_day=2)
    first = _decide(lake, resource, _at(25, 10), ["GOOG", "JPM", "NVDA"])
    assert first["orders_sent"] == 2 and any("trades per day: 2 >= 2" in why for why in _holds(resource, "NVDA"))
    second = _decide(lake, resource, _at(25, 11), ["NVDA"])
    assert second["orders_sent"] == 0 and any(i.startswith("trades_per_day") for i in second["interventions"])
    assert _decide(lake, resource, _at(26, 10), ["NVDA"])["orders_sent"] == 1
    assert _orders(resource) == ["GOOG", "JPM", "NVDA"]
    assert _interventions(resource) == [("trades_per_day", "2024-11-25")]


def test_positions_are_flattened_before_the_half_days_13_00_close_by_the_schedule(lake: LakeResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.definitions import defs

    resource = _resource(tmp_path)
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", resource.ledger_url)
    monkeypatch.setenv("QUANTLAKE_STRATEGY", STRATEGY)
    monkeypatch.setenv("QUANTLAKE_DECISION_TIMEFRAME", "1m")
    schedule = defs.resolve_schedule_def("decision_schedule")
    decide_job = defs.resolve_job_def("decide_job")

    def tick(at: datetime) -> dict[str, Any]:
        with dg.build_schedule_context(scheduled_execution_time=at, repository_def=defs.get_repository_def()) as ctx:
            [request] = schedule.evaluate_tick(ctx).run_requests or []
        config = request.run_config
        config["ops"]["decision_cycle"]["config"]["symbols"] = ["JPM", "GOOG"]
        run = decide_job.execute_in_process(run_config=config, resources={"lake": lake, "trading": resource}, tags={**request.tags, SCHEDULED_TAG: at.isoformat()})
        assert run.success
        [mat] = run.asset_materializations_for_node("decision_cycle")
        return {k: v.value for k, v in mat.metadata.items()}

    assert tick(_at(29, 11))["orders_sent"] == 2
    closing = tick(_at(29, 12, 55))  # the window's end on a half day: 5 minutes before 13:00
    assert closing["flattened_orders"] == 2 and closing["orders_sent"] == 0 and closing["positions"] == {"GOOG": pytest.approx(closing["positions"]["GOOG"]), "JPM": pytest.approx(closing["positions"]["JPM"])}
    _decide(lake, resource, _at(2, 11, month=12), ["JPM", "GOOG"])  # the next session's run lives through 12:55
    with _ledger(resource) as ledger:
        fills = [e for e in ledger.events(types=[EventType.FILL.value]) if e.payload["client_order_id"].startswith("close-")]
        flat_after = replay_portfolio(ledger).positions
    assert sorted(f.symbol for f in fills) == ["GOOG", "JPM"] and all(f.as_of == _at(29, 12, 55) for f in fills)  # before 13:00
    assert {s: q for s, q in flat_after.items() if q} == {}
    assert ("flatten", "2024-11-29") in _interventions(resource)


def test_kill_switch_in_simulation_leaves_the_account_flat_and_halted_across_runs(lake: LakeResource, tmp_path: Path) -> None:
    from orchestration.definitions import defs

    resource = _resource(tmp_path)
    assert _decide(lake, resource, _at(25, 10), ["JPM", "GOOG"])["orders_sent"] == 2
    assert _decide(lake, resource, _at(25, 10, 15), ["JPM", "GOOG"])["positions"]  # filled at 10:00
    killed = defs.resolve_job_def("kill_switch_job").execute_in_process(
        run_config={"ops": {"kill_switch_op": {"config": {"reason": "desk says stop"}}}}, resources={"trading": resource}, tags={NOW_TAG: _at(25, 10, 20).isoformat()}
    )
    assert killed.success
    assert len(resource.simulated_broker().open_orders()) == 2  # the closing orders are saved with the account
    after = _decide(lake, resource, _at(25, 10, 30), ["JPM", "GOOG", "NVDA"])
    assert after["positions"] == {} and after["orders_sent"] == 0 and "kill_switch" in str(after["blocked"])
    assert resource.simulated_broker().positions() == {}
    with _ledger(resource) as ledger:
        assert {s: q for s, q in replay_portfolio(ledger).positions.items() if q} == {}
    assert _decide(lake, resource, _at(26, 11), ["NVDA"])["orders_sent"] == 0  # the next session too
    assert [k for k, _ in _interventions(resource) if k != "blocked"] == ["kill_switch"]
