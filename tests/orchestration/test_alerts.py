"""A failed run raises an alert: a log line, and a POST to the configured webhook."""

from __future__ import annotations

import dagster as dg
import pytest

from orchestration.alerts import send_alert
from orchestration.sensors import run_failure_alert_sensor
from tests.fakes.webhook_receiver import webhook_receiver


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
