"""Sensors. Each is idempotent: `run_key`s and cursors make a launch happen once."""

from __future__ import annotations

import dagster as dg

from orchestration.alerts import send_alert


@dg.run_failure_sensor(name="run_failure_alert_sensor", description="Raises an alert (log + webhook) for every failed run.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    send_alert(
        f"Quantlake run failed: {run.job_name}",
        {
            "run_id": run.run_id,
            "job": run.job_name,
            "partition": run.tags.get("dagster/partition"),
            "mode": run.tags.get("quantlake/mode"),
            "error": context.failure_event.message,
        },
    )


SENSORS = [run_failure_alert_sensor]
