"""Sensors. Each is idempotent: `run_key`s and cursors make a launch happen once."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import dagster as dg

from lake.errors import UnknownSymbolError
from orchestration.alerts import send_alert
from orchestration.jobs import decide_job, ingest_intraday_job
from orchestration.schedules import decision_run_config, trading_halted
from orchestration.settings import settings


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
    env = settings()
    return {
        "quantlake/mode": env.mode,
        "quantlake/strategy": env.strategy,
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
    from orchestration.run_context import ObservedLakeResource
    from trading.cycle import latest_closes

    env = settings()
    threshold = env.move_pct / 100
    lake = ObservedLakeResource()  # the Definitions' lake (QUANTLAKE_LAKE_URL or QUANTLAKE_LAKE_DIR), not every resource built
    try:
        closes = latest_closes(lake.location, sorted(env.universe_symbols), datetime.now(UTC), env.move_timeframe)
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


# Missed sessions: the close's 1-minute ingest failed for good (the source down all day, a full
# disk) or never ran (the daemon was down). Nothing scheduled asks for that partition again.
REFETCH_RUN_TAG = "quantlake/refetch"


def _complete_until(instance: dg.DagsterInstance, key: dg.MultiPartitionKey) -> datetime | None:
    """The last bar the partition's latest materialization wrote (None: never materialized; the end of
    time when rows were quarantined: done, with the reason in the quarantine)."""
    latest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("bars_1m"), asset_partitions=[str(key)]), limit=1).records
    mat = latest[0].asset_materialization if latest else None
    if mat is None or "last_ts" not in mat.metadata:
        return None
    if "quarantined_rows" in mat.metadata and mat.metadata["quarantined_rows"].value:
        return datetime.max.replace(tzinfo=UTC)  # validated, the rest quarantined with its reason: a refetch reads the same
    last = datetime.fromisoformat(str(mat.metadata["last_ts"].value))
    return last if last.tzinfo else last.replace(tzinfo=UTC)


class Refetches(NamedTuple):
    requests: list[dg.RunRequest]
    notes: list[str]  # why other partitions are not asked again
    confirmed: dict[str, str]  # per symbol, the last session confirmed complete, with every one before it


def missed_session_requests(
    instance: dg.DagsterInstance, now: datetime, since: datetime, symbols: list[str], confirmed: Mapping[str, str] | None = None
) -> Refetches:
    """The refetches due at `now` for the sessions that closed between `since` (when the sensor first
    ran) and `now` less the grace, the last N of them.

    A partition is missed when its latest materialization does not reach the session's last
    minute (or there is none). It is asked again once per attempt (run key `refetch|day|symbol|n`),
    not while a run of it is in flight, not sooner than the backoff after the last run ended, and
    at most QUANTLAKE_REFETCH_ATTEMPTS times (the failures were alerted).

    A symbol's sessions up to `confirmed[symbol]` were found complete before: they are not queried
    again (one materialization query per session and symbol was most of the sensor's cost). A
    partition rewritten incomplete after that is not refetched: the rewrite's run is its owner."""
    from assets.partitions import intraday_key, intraday_partitions, recent_sessions
    from lake.calendar import session_bounds

    env = settings()
    sessions_back = env.refetch_sessions
    grace = timedelta(minutes=env.refetch_grace_min)
    backoff = timedelta(minutes=env.refetch_backoff_min)
    attempts_max = env.refetch_attempts
    cal = env.exchange
    [days_dim] = [d for d in intraday_partitions.partitions_defs if d.name == "date"]
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    done = dict(confirmed or {})
    gap: set[str] = set()  # symbols with an incomplete session: nothing after it is confirmed
    today = now.astimezone(ZoneInfo("America/New_York")).date()
    closed = [d for d in recent_sessions(today, sessions_back + 1, cal) if session_bounds(d, cal)[1] + grace <= now][-sessions_back:]
    for day in closed:
        close = session_bounds(day, cal)[1]
        if close < since or not days_dim.partitions_def.has_partition_key(day.isoformat()):
            continue
        for symbol in symbols:
            if day.isoformat() <= done.get(symbol, ""):
                continue
            key = intraday_key(day.isoformat(), symbol)
            last = _complete_until(instance, key)
            if last is not None and last >= close - timedelta(minutes=1):
                if symbol not in gap:
                    done[symbol] = day.isoformat()
                continue
            gap.add(symbol)
            records = instance.get_run_records(dg.RunsFilter(job_name="ingest_intraday_job", tags={"dagster/partition": str(key)}))
            if any(not r.dagster_run.is_finished for r in records):
                continue  # a run of it is in flight (the close's, a retry, an earlier refetch)
            attempts = sum(1 for r in records if REFETCH_RUN_TAG in r.dagster_run.tags and "dagster/parent_run_id" not in r.dagster_run.tags)
            if attempts >= attempts_max:
                notes.append(f"{key}: {attempts} refetches failed, not asked again")
                continue
            ended = max((r.end_time or 0.0 for r in records), default=0.0)
            if ended and now.timestamp() < ended + backoff.total_seconds():
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"refetch|{day.isoformat()}|{symbol}|{attempts + 1}",
                    partition_key=key,
                    tags={**_tags(), REFETCH_RUN_TAG: str(attempts + 1)},
                )
            )
    return Refetches(requests, notes, done)


def _read_cursor(cursor: str) -> tuple[datetime, dict[str, str]]:
    """(since, confirmed): the cursor is the sensor's first run (ISO), then JSON once a session is confirmed."""
    if not cursor.startswith("{"):
        return datetime.fromisoformat(cursor), {}
    state = json.loads(cursor)
    return datetime.fromisoformat(state["since"]), dict(state.get("confirmed", {}))


@dg.sensor(
    job=ingest_intraday_job,
    name="missed_sessions_sensor",
    minimum_interval_seconds=300,
    description=(
        "Refetches the 1-minute bars of a recent session whose partition is missing or incomplete (the close's "
        "ingest failed or never ran): the last QUANTLAKE_REFETCH_SESSIONS (5) sessions closed since the sensor "
        "started, QUANTLAKE_REFETCH_GRACE_MIN (60) after the close, one attempt per run key, at most "
        "QUANTLAKE_REFETCH_ATTEMPTS (3), QUANTLAKE_REFETCH_BACKOFF_MIN (60) apart. Sessions found complete are "
        "kept in the cursor and not checked again."
    ),
)
def missed_sessions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    from assets.partitions import add_symbols

    now = datetime.now(UTC)
    if not context.cursor:  # sessions before the sensor first ran are a backfill's job, not a refetch's
        context.update_cursor(now.isoformat())
    since, confirmed = _read_cursor(context.cursor or now.isoformat())
    symbols = sorted(settings().universe_symbols)
    found = missed_session_requests(context.instance, now, since, symbols, confirmed)
    if found.confirmed != confirmed:
        context.update_cursor(json.dumps({"since": since.isoformat(), "confirmed": found.confirmed}, sort_keys=True))
    if not found.requests:
        return dg.SkipReason("; ".join(found.notes) or "no missed session")
    add_symbols(context.instance, symbols)  # the universe may have grown since the close
    return dg.SensorResult(run_requests=found.requests)


SENSORS = [run_failure_alert_sensor, new_daily_bars_sensor, price_move_sensor, missed_sessions_sensor]
