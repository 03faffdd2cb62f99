"""Alerts: a failed run, every intervention in the ledger (once) and a P&L summary per session, each
a log line and a POST to the configured webhook (the loopback receiver here)."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime
from typing import Any

import dagster as dg
import pytest
import time_machine

from orchestration.alert_sensors import daily_pnl_summary_sensor, intervention_alert_sensor
from orchestration.alerts import send_alert
from orchestration.sensors import run_failure_alert_sensor
from tests.fakes.webhook_receiver import webhook_receiver
from tests.orchestration.observed_runs import (
    NY,
    decide,
    kill_switch,
    ledger_url,
    resources,
    resume,
    write_lake,
)
from trading.events import EventType
from trading.ledger import Ledger


@dg.op
def explode() -> None:
    raise RuntimeError("broker said no")


@dg.job
def doomed_job() -> None:
    explode()


def test_failed_run_posts_an_alert_to_the_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as (url, received), dg.instance_for_test() as instance:
        monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", url)
        result = doomed_job.execute_in_process(instance=instance, raise_on_error=False, tags={"quantlake/mode": "paper"})
        assert not result.success
        failure = result.get_run_failure_event()
        context = dg.build_run_status_sensor_context(
            sensor_name=run_failure_alert_sensor.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
        ).for_run_failure()
        run_failure_alert_sensor(context)
    assert len(received) == 1
    alert = received[0]
    assert alert["run_id"] == result.run_id and alert["job"] == "doomed_job" and alert["mode"] == "paper"
    assert "doomed_job" in alert["text"]


def test_a_broken_webhook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with webhook_receiver(status=500) as (url, received):
        assert send_alert("test", {"k": 1}, url=url) is False
    assert len(received) == 1
    assert send_alert("no hook", {"k": 2}, url="") is False
    assert any("alert: no hook" in r.getMessage() for r in caplog.records)


# -- every intervention an alert, once; a P&L summary per session --------------------------------------


@pytest.fixture(scope="module")
def halted_account(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Simulated decide_job runs at 10:00 and 11:00 (entries, marks), kill_switch_job at 11:30, and a
    decide_job at 12:00 whose entries are refused ("blocked" interventions) on 2024-11-25."""
    tmp = tmp_path_factory.mktemp("alerts")
    res = resources(write_lake(tmp / "lake"), tmp)
    with dg.instance_for_test() as instance:
        decide(res, datetime(2024, 11, 25, 10, 0, tzinfo=NY), instance)
        decide(res, datetime(2024, 11, 25, 11, 0, tzinfo=NY), instance)
        kill_switch(res, datetime(2024, 11, 25, 11, 30, tzinfo=NY), instance, reason="alerts test")
        decide(res, datetime(2024, 11, 25, 12, 0, tzinfo=NY), instance)
    return {"res": res, "url": ledger_url(tmp)}


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    """One evaluation as the sensor daemon does it: the stored cursor in, the new cursor out."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=sensor.name)
    data = sensor.evaluate_tick(context)
    return data.cursor


def _interventions(url: str) -> list[str]:
    with Ledger(url) as ledger:
        return [str(e.payload["kind"]) for e in ledger.events(types=[EventType.INTERVENTION.value])]


def test_every_intervention_alerts_once_across_ticks_restarts_and_a_failing_webhook(
    halted_account: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = halted_account["url"]
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", url)
    monkeypatch.setenv("QUANTLAKE_MODE", "simulation")
    assert {"kill_switch", "blocked"} <= set(_interventions(url))
    with dg.instance_for_test() as instance, time_machine.travel(datetime(2024, 11, 25, 12, 5, tzinfo=NY), tick=False):
        with webhook_receiver(status=500) as (hook, failed):
            monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
            cursor = _tick(intervention_alert_sensor, instance, None)
        assert [a["kind"] for a in failed] == ["kill_switch"]  # tried, refused: not delivered
        with webhook_receiver() as (hook, received):
            monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
            cursor = _tick(intervention_alert_sensor, instance, cursor)  # retried from the failed one
            assert [a["kind"] for a in received] == ["kill_switch"]
            alert = received[0]
            assert alert["reason"] == "alerts test" and alert["mode"] == "simulation" and "kill_switch" in alert["text"]
            assert alert["alert_id"] and alert["at"].startswith("2024-11-25T16:30")
            cursor = _tick(intervention_alert_sensor, instance, cursor)
            assert len(received) == 1  # nothing new: nothing sent
    # A restart: a new process and instance, the daemon's stored cursor; then the account is resumed.
    with dg.instance_for_test() as instance:
        resume(halted_account["res"], datetime(2024, 11, 25, 12, 30, tzinfo=NY), instance, by="ops")
    with dg.instance_for_test() as instance, webhook_receiver() as (hook, received), time_machine.travel(datetime(2024, 11, 25, 12, 35, tzinfo=NY), tick=False):
        monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
        cursor = _tick(intervention_alert_sensor, instance, cursor)
        _tick(intervention_alert_sensor, instance, cursor)
    assert [(a["kind"], a["by"]) for a in received] == [("resume", "ops")]


def test_a_sensor_turned_on_late_does_not_replay_old_interventions(halted_account: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", halted_account["url"])
    with dg.instance_for_test() as instance, webhook_receiver() as (hook, received), time_machine.travel(datetime(2024, 12, 3, 12, 0, tzinfo=NY), tick=False):
        monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
        cursor = _tick(intervention_alert_sensor, instance, None)
    assert received == [] and cursor is not None and json.loads(cursor)["seq"] > 0


def test_an_intervention_committed_behind_the_cursor_is_still_alerted(halted_account: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a lower seq can commit after a higher one was read: the sensor re-reads a window."""
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", halted_account["url"])
    with Ledger(halted_account["url"]) as ledger:
        seen = list(ledger.events_with_seq(types=[EventType.INTERVENTION.value]))
        last = ledger.last_seq()
    [(seq, kill)] = [(s, e) for s, e in seen if e.payload["kind"] == "kill_switch"]
    # The cursor of a tick that read up to `last` while the kill switch's event was not yet committed.
    cursor = json.dumps({"seq": last, "done": {e.event_id: s for s, e in seen if e is not kill}})
    with dg.instance_for_test() as instance, webhook_receiver() as (hook, received), time_machine.travel(datetime(2024, 11, 25, 12, 5, tzinfo=NY), tick=False):
        monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
        cursor = _tick(intervention_alert_sensor, instance, cursor)
        _tick(intervention_alert_sensor, instance, cursor)
    assert [(a["kind"], a["alert_id"], a["seq"]) for a in received] == [("kill_switch", kill.event_id, seq)]


def test_one_pnl_summary_per_session_after_its_close(
    halted_account: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = halted_account["url"]
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", url)
    monkeypatch.setenv("QUANTLAKE_MODE", "simulation")
    with Ledger(url) as ledger:
        events = list(ledger.events())
    marks = [e.payload["equity"] for e in events if e.type == EventType.RECONCILIATION and e.payload.get("ok") and e.payload["session"] == "2024-11-25"]
    orders = sum(e.type == EventType.ORDER_SUBMITTED for e in events)
    kinds = Counter(str(e.payload["kind"]) for e in events if e.type == EventType.INTERVENTION)
    with dg.instance_for_test() as instance, webhook_receiver() as (hook, received):
        monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
        with time_machine.travel(datetime(2024, 11, 25, 15, 59, tzinfo=NY), tick=False):
            cursor = _tick(daily_pnl_summary_sensor, instance, None)  # the 22nd's, not today's yet
        assert [a["session"] for a in received] == ["2024-11-22"] and cursor == "2024-11-22"
        with time_machine.travel(datetime(2024, 11, 25, 16, 5, tzinfo=NY), tick=False):
            cursor = _tick(daily_pnl_summary_sensor, instance, cursor)
            cursor = _tick(daily_pnl_summary_sensor, instance, cursor)  # once only
        assert [a["session"] for a in received] == ["2024-11-22", "2024-11-25"]
        day = received[1]
        assert day["opening_equity"] == pytest.approx(marks[0]) and day["closing_equity"] == pytest.approx(marks[-1])
        assert day["pnl"] == pytest.approx(marks[-1] - marks[0]) and day["pnl"] != 0
        assert day["orders"] == orders > 0 and day["interventions"] == dict(kinds)
        assert "P&L" in day["text"] and day["alert_id"] == "daily_pnl|2024-11-25"
        # The half day after Thanksgiving closes at 13:00: its summary comes at 13:05, not at 16:00.
        with time_machine.travel(datetime(2024, 11, 29, 13, 5, tzinfo=NY), tick=False):
            cursor = _tick(daily_pnl_summary_sensor, instance, cursor)
        assert [a["session"] for a in received[2:]] == ["2024-11-26", "2024-11-27", "2024-11-29"]
        assert received[-1]["pnl"] is None and "no marks" in received[-1]["text"]
    # A routine summary is not an error: a search of the logs for errors finds only what needs a person.
    summaries = [r for r in caplog.records if r.name == "quantlake.alerts" and "daily_pnl|" in r.getMessage()]
    assert len(summaries) == 5 and {r.levelname for r in summaries} == {"INFO"}


@pytest.mark.parametrize("sensor", [intervention_alert_sensor, daily_pnl_summary_sensor])
def test_the_ledger_sensors_do_not_create_a_ledger(sensor: dg.SensorDefinition, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", f"sqlite:///{path}")
    with dg.instance_for_test() as instance, time_machine.travel(datetime(2024, 11, 25, 16, 5, tzinfo=NY), tick=False):
        data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, sensor_name=sensor.name))
    assert data.skip_message == f"no ledger yet at {path}" and not path.exists()


def test_breaker_trips_in_a_decide_job_are_alerted(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Prices fall 65 % at 10:30 with about 28 % of the account in them: the 11:00 run trips the daily loss
    limit (3 %) and the drawdown breaker (15 %); each trip is one alert with its reason."""
    res = resources(write_lake(tmp_path / "lake", crash=0.35), tmp_path)
    with dg.instance_for_test() as instance:
        decide(res, datetime(2024, 11, 25, 10, 0, tzinfo=NY), instance)
        decide(res, datetime(2024, 11, 25, 11, 0, tzinfo=NY), instance)
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", ledger_url(tmp_path))
    with dg.instance_for_test() as instance, webhook_receiver() as (hook, received), time_machine.travel(datetime(2024, 11, 25, 11, 1, tzinfo=NY), tick=False):
        monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", hook)
        _tick(intervention_alert_sensor, instance, None)
    assert sorted(a["kind"] for a in received) == ["daily_loss", "drawdown"]
    for alert in received:
        assert alert["equity"] < 85_000 and alert["reason"] in alert["text"] and alert["at"].startswith("2024-11-25T16:00")
    # A trip needs a person: its log line is an ERROR.
    trips = [r for r in caplog.records if r.name == "quantlake.alerts" and r.getMessage().startswith("alert: ")]
    assert len(trips) == 2 and {r.levelname for r in trips} == {"ERROR"}


@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get("QUANTLAKE_FROZEN_NOW")),
    # `dagster dev` runs in its own processes on the wall clock: a frozen rerun would freeze only this
    # test's side (it was a quarter of each rerun, 250 s at load 10, and tested nothing frozen).
    reason="the daemon's own processes are not frozen with this one",
)
def test_the_daemon_alerts_each_intervention_once_across_a_restart(tmp_path: Any) -> None:
    """`dagster dev` (webserver, daemon, code server) with the sensor on by default: its cursor is
    persisted by the instance, so a restarted daemon alerts what came after, and nothing twice."""
    import time

    from tests.orchestration.dagster_server import dagster_dev
    from trading.events import Event
    from trading.models import Mode

    url = ledger_url(tmp_path)

    def intervene(kind: str) -> None:
        with Ledger(url) as ledger:
            ledger.emit(Event(type=EventType.INTERVENTION, run_id=f"ops-{kind}", mode=Mode.PAPER, as_of=datetime(2024, 11, 25, 11, 30, tzinfo=NY), payload={"kind": kind, "reason": f"{kind} by the test"}))

    def wait_for(received: list[dict[str, Any]], kind: str, log: Any) -> None:
        deadline = time.monotonic() + 240
        while not any(a.get("kind") == kind for a in received):
            assert time.monotonic() < deadline, f"no {kind} alert; see {log}"
            time.sleep(1)

    intervene("kill_switch")
    with webhook_receiver() as (hook, received):
        env = {"QUANTLAKE_LEDGER_URL": url, "QUANTLAKE_ALERT_WEBHOOK": hook, "QUANTLAKE_ALERT_LOOKBACK_H": "1000000", "GX_ANALYTICS_ENABLED": "false"}
        with dagster_dev(tmp_path / "home", env, tmp_path / "dev1.log"):
            wait_for(received, "kill_switch", tmp_path / "dev1.log")
        intervene("resume")
        with dagster_dev(tmp_path / "home", env, tmp_path / "dev2.log"):
            wait_for(received, "resume", tmp_path / "dev2.log")
            intervene("drawdown")  # one more tick after the resume alert, so a repeat would show
            wait_for(received, "drawdown", tmp_path / "dev2.log")
    kinds = [a["kind"] for a in received if "kind" in a]
    assert kinds == ["kill_switch", "resume", "drawdown"]
