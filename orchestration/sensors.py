"""Sensors. Each is idempotent: `run_key`s and cursors make a launch happen once."""

import json
import os
from datetime import UTC, datetime

import dagster as dg

from assets.partitions import universe
from lake.errors import UnknownSymbolError
from orchestration.alerts import send_alert
from orchestration.jobs import decide_job
from orchestration.schedules import decision_run_config, trading_halted


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


def _tags() -> dict[str, str]:
    return {
        "quantlake/mode": os.environ.get("QUANTLAKE_MODE", "validation"),
        "quantlake/strategy": os.environ.get("QUANTLAKE_STRATEGY", "sma_cross"),
        "quantlake/trigger": "sensor",
    }


@dg.asset_sensor(
    asset_key=dg.AssetKey("bars_1d"),
    job=decide_job,
    name="new_daily_bars_sensor",
    minimum_interval_seconds=60,
    description="Newly validated daily bars launch one decision run per new bar (run_key: the bar's time).",
)
def new_daily_bars_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry) -> dg.RunRequest | dg.SkipReason:
    mat = asset_event.asset_materialization
    if mat is None:
        return dg.SkipReason("not a materialization")
    meta = mat.metadata
    if "quarantined_rows" in meta and meta["quarantined_rows"].value:
        return dg.SkipReason(f"{mat.partition}: {meta['quarantined_rows'].value} rows failed validation; no decision on them")
    if "last_ts" not in meta:
        return dg.SkipReason(f"{mat.partition}: no bars")
    halted = trading_halted()
    if halted:
        return dg.SkipReason(f"trading is halted ({halted})")
    # Every symbol's partition reports the same new bar: one run per bar, never two.
    return dg.RunRequest(run_key=f"decide|1d|{meta['last_ts'].value}", run_config=decision_run_config(), tags=_tags())


@dg.sensor(
    job=decide_job,
    name="price_move_sensor",
    minimum_interval_seconds=60,
    description="A move of more than QUANTLAKE_MOVE_PCT (default 2 %) since the last trigger launches a decision run.",
)
def price_move_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    from orchestration.resources import build_resources
    from trading.cycle import latest_closes

    threshold = float(os.environ.get("QUANTLAKE_MOVE_PCT", "2")) / 100
    lake = build_resources()["lake"]
    try:
        closes = latest_closes(lake.path, universe(), datetime.now(UTC), os.environ.get("QUANTLAKE_MOVE_TIMEFRAME", "1m"))
    except UnknownSymbolError as exc:  # a fresh deployment before its first ingest: nothing to compare yet
        return dg.SkipReason(f"no bars in the lake yet ({exc})")
    if not closes:
        return dg.SkipReason("no bars in the lake yet")
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    moved = {
        s: close / seen[s][1] - 1
        for s, (ts, close) in closes.items()
        if s in seen and seen[s][1] and abs(close / seen[s][1] - 1) > threshold
    }
    if not seen or not moved:
        if not seen:
            context.update_cursor(json.dumps({s: [ts, c] for s, (ts, c) in closes.items()}))
        return dg.SkipReason(f"no move over {threshold:.1%} since the last trigger" if seen else "baseline recorded")
    halted = trading_halted()
    if halted:
        return dg.SkipReason(f"trading is halted ({halted})")
    context.update_cursor(json.dumps({s: [ts, c] for s, (ts, c) in closes.items()}))
    key = "|".join(f"{s}@{closes[s][0]}" for s in sorted(moved))
    return dg.RunRequest(run_key=f"move|{key}", run_config=decision_run_config(), tags={**_tags(), "quantlake/moved": ",".join(f"{s}:{moved[s]:+.2%}" for s in sorted(moved))})


SENSORS = [run_failure_alert_sensor, new_daily_bars_sensor, price_move_sensor]
