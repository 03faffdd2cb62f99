"""What a soak must leave behind, checked against the exchange calendar (not against the schedules' code).

Each check returns the list of what is wrong (empty: fine), so a run of the harness can report
everything at once and a test can assert on it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl
from dagster._core.scheduler.instigation import TickStatus

from lake.calendar import session_bounds, trading_days
from lake.retention import cutoff_date, expired_quarantine, expired_reports
from lake.store import read_bars
from orchestration.retention import KEEP, RetentionPolicy, expired_runs, retention_policy
from tests.soak.harness import SoakResult, environment
from tests.soak.parity import check_equity_vs_backtest
from trading.brokers.simulated import SimulatedBroker
from trading.events import EventType
from trading.ledger import Ledger
from trading.ledger.archive import ArchiveError, restore_events, verify_archive
from trading.ledger.portfolio import replay_portfolio

NY = ZoneInfo("America/New_York")
DECISION_TIMES = (time(11, 0), time(14, 30))
OPEN_OFFSET = CLOSE_OFFSET = FLATTEN_LEAD = timedelta(minutes=5)  # the defaults
RETENTION, RETENTION_AT = "retention_schedule", time(3, 0)


def sessions(result: SoakResult) -> list[date]:
    return trading_days(result.settings.start, result.settings.end)


def expected_scheduled_runs(result: SoakResult) -> Counter[tuple[str, datetime]]:
    """(schedule, tick in UTC) -> runs, from the calendar's opens and closes (half days included)."""
    n = len(result.settings.symbols)
    out: Counter[tuple[str, datetime]] = Counter()
    for day in sessions(result):
        open_, close = session_bounds(day)
        out[("market_open_schedule", open_ + OPEN_OFFSET)] += n
        out[("market_close_schedule", close + CLOSE_OFFSET)] += n
        out[("end_of_day_schedule", close + CLOSE_OFFSET)] += 1
        for t in DECISION_TIMES:
            at = datetime.combine(day, t, tzinfo=NY).astimezone(UTC)
            if open_ <= at < close:
                out[("decision_schedule", at)] += 1
        out[("decision_schedule", close - FLATTEN_LEAD)] += 1  # the window's end: the cycle that flattens
    day = result.settings.start
    while day <= result.settings.end:  # retention: weekly, Sundays at 03:00 New York, sessions or not
        if day.weekday() == 6:
            out[(RETENTION, datetime.combine(day, RETENTION_AT, tzinfo=NY).astimezone(UTC))] += 1
        day += timedelta(days=1)
    return out


def scheduled_at(run: dg.DagsterRun) -> datetime:
    """The tick a scheduled run belongs to (the daemon writes the hidden `.dagster/` tag)."""
    raw = run.tags.get(".dagster/scheduled_execution_time") or run.tags["dagster/scheduled_execution_time"]
    return datetime.fromisoformat(raw).astimezone(UTC)


def is_retry(run: dg.DagsterRun) -> bool:
    """A run the run-retries daemon launched again (it keeps the original's tags and run key)."""
    return "dagster/parent_run_id" in run.tags


def scheduled_runs(result: SoakResult) -> Counter[tuple[str, datetime]]:
    out: Counter[tuple[str, datetime]] = Counter()
    for run in result.runs:
        if is_retry(run):
            continue
        if name := run.tags.get("dagster/schedule_name"):
            out[(name, scheduled_at(run))] += 1
    return out


def check_scheduled_runs(result: SoakResult, halted_skips: set[datetime] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Every scheduled run exactly once, at the calendar's times; nothing on a holiday or a weekend."""
    want, got = expected_scheduled_runs(result), scheduled_runs(result)
    # Runs the retention job deleted (older than its runs_days) may be gone, never doubled.
    gone_before = retention_cutoffs(result).get("runs")

    def wrong(at: datetime, n: int, have: int) -> bool:
        return have > n or (have < n and (gone_before is None or at >= gone_before))

    problems = [f"{name} at {at:%Y-%m-%d %H:%M} UTC: {got[(name, at)]} runs, expected {n}" for (name, at), n in sorted(want.items()) if wrong(at, n, got[(name, at)]) and at not in halted_skips]
    problems += [f"{name} at {at:%Y-%m-%d %H:%M} UTC: {n} unexpected runs" for (name, at), n in sorted(got.items()) if (name, at) not in want]
    days = set(sessions(result))
    problems += [f"{name} ran on {at.astimezone(NY):%Y-%m-%d}, not a session" for name, at in got if name != RETENTION and at.astimezone(NY).date() not in days]
    keys = Counter(run.tags.get("dagster/run_key") for run in result.runs if run.tags.get("dagster/run_key") and not is_retry(run))
    problems += [f"run key {k!r} launched {n} times" for k, n in keys.items() if n > 1]
    return problems


def check_runs_succeeded(result: SoakResult, allowed_failures: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return [
        f"run {r.run_id[:8]} {r.job_name} {r.tags.get('dagster/partition', '')}: {r.status.value}"
        for r in result.runs
        if r.status != dg.DagsterRunStatus.SUCCESS and r.run_id not in allowed_failures
    ]


def check_ticks(instance: dg.DagsterInstance) -> list[str]:
    """No schedule or sensor evaluation failed (a failing sensor launches nothing, silently to a user)."""
    problems = []
    for state in instance.all_instigator_state():
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, statuses=[TickStatus.FAILURE]):
            error = tick.error.message.splitlines()[0] if tick.error else ""
            problems.append(f"{state.instigator_name} tick at {datetime.fromtimestamp(tick.timestamp, UTC):%Y-%m-%d %H:%M} failed: {error}")
    return problems


def check_partitions(result: SoakResult, instance: dg.DagsterInstance) -> list[str]:
    """Every session x symbol of bars_1m materialized once, and its bars in the lake, complete to the close."""
    problems = []
    days = sessions(result)
    want = {f"{d.isoformat()}|{s}" for d in days for s in result.settings.symbols}
    counts: Counter[str | None] = Counter()
    cursor = None
    while True:  # paged: Dagster returns at most 10,000 records at a time
        page = instance.fetch_materializations(dg.AssetKey("bars_1m"), limit=10_000, cursor=cursor)
        counts.update(r.partition_key for r in page.records)
        if not page.has_more:
            break
        cursor = page.cursor
    problems += [f"bars_1m {k}: materialized {counts[k]} times" for k in sorted(want) if counts[k] != 1]
    problems += [f"bars_1m {k}: unexpected partition" for k in sorted(str(k) for k in set(counts) - want)]
    minute = read_bars(result.lake, list(result.settings.symbols), "1m")
    per_day = minute.with_columns(day=pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()).group_by("symbol", "day").agg(
        n=pl.len(), first=pl.col("ts").min(), last=pl.col("ts").max()
    )
    have = {(r["symbol"], r["day"]): r for r in per_day.iter_rows(named=True)}
    for d in days:
        open_, close = session_bounds(d)
        minutes = int((close - open_).total_seconds() // 60)
        for s in result.settings.symbols:
            row = have.get((s, d))
            if row is None:
                problems.append(f"1m bars {d} {s}: none in the lake")
            elif row["n"] != minutes or row["last"].replace(tzinfo=UTC) != close - timedelta(minutes=1):
                problems.append(f"1m bars {d} {s}: {row['n']} bars to {row['last']:%H:%M} UTC, expected {minutes} to {close - timedelta(minutes=1):%H:%M}")
    daily = read_bars(result.lake, list(result.settings.symbols), "1d")
    for s in result.settings.symbols:
        got_days = set(daily.filter(pl.col("symbol") == s)["ts"].dt.convert_time_zone("America/New_York").dt.date().to_list())
        # The last session's daily bar arrives at the next open, after the soak ends.
        missing = sorted(set(days[:-1]) - got_days)
        if missing:
            problems.append(f"1d bars {s}: missing {[d.isoformat() for d in missing]}")
    return problems


def check_reports(result: SoakResult) -> list[str]:
    """Every session's end-of-day report, but those the retention deleted (older than its days)."""
    folder = result.lake / "reports" / "eod"
    now, days = last_retention_now(result), retention_policy_of(result).reports_days
    kept_from = cutoff_date(now, days) if now is not None and days != KEEP else date.min
    return [f"no end-of-day report for {d}" for d in sessions(result) if d >= kept_from and not (folder / f"{d.isoformat()}.md").exists()]


def check_orders_and_ledger(result: SoakResult) -> list[str]:
    """No client order id sent twice; the ledger's replay is the simulated account, order for order."""
    problems = []
    with Ledger(result.ledger_url) as ledger:
        submitted = list(ledger.events(types=[EventType.ORDER_SUBMITTED.value]))
        fills = list(ledger.events(types=[EventType.FILL.value]))
        portfolio = replay_portfolio(ledger)
        written = ledger.count()
    if not written and any(r.job_name == "decide_job" and r.status == dg.DagsterRunStatus.SUCCESS for r in result.runs):
        problems.append(f"decision runs succeeded but the soak's ledger {result.ledger_url} is empty: they wrote elsewhere")
    sent = [e.payload["client_order_id"] for e in submitted]
    # An unknown outcome (a 5xx: the order may exist) is asked again later; confirmed twice is sent twice.
    confirmed = Counter(e.payload["client_order_id"] for e in submitted if e.payload.get("status") != "unknown")
    problems += [f"order {cid} confirmed {n} times" for cid, n in confirmed.items() if n > 1]
    placed = {e.payload["client_order_id"]: e.recorded_at for e in submitted}  # the (simulated) instant it was sent
    for fill in fills:  # a fill at a bar that opened before the order was sent is a price from the past
        at = placed.get(fill.payload["client_order_id"])
        if at is not None and fill.as_of is not None and fill.as_of < at - timedelta(minutes=1):
            problems.append(f"fill of {fill.payload['client_order_id']} at the bar of {fill.as_of:%Y-%m-%d %H:%M}, before its order ({at:%Y-%m-%d %H:%M})")
    if not result.sim_state.exists():
        return problems + (["orders in the ledger but no simulated account"] if sent else [])
    broker = SimulatedBroker.from_state(json.loads(result.sim_state.read_text()))
    at_broker = [o["request"]["client_order_id"] for o in json.loads(result.sim_state.read_text())["orders"]]
    if len(at_broker) != len(set(at_broker)) or set(at_broker) != set(sent):
        problems.append(f"the broker has {len(at_broker)} orders, the ledger {len(sent)}: {sorted(set(at_broker) ^ set(sent))[:5]}")
    if abs(portfolio.cash - broker.cash) > 1e-6 * max(1.0, abs(broker.cash)):
        problems.append(f"ledger cash {portfolio.cash:,.6f} != broker cash {broker.cash:,.6f}")
    held = {s: q for s, q in broker.positions().items() if abs(q) > 1e-9}
    if {s: round(q, 9) for s, q in portfolio.positions.items()} != {s: round(q, 9) for s, q in held.items()}:
        problems.append(f"ledger positions {portfolio.positions} != broker positions {held}")
    return problems


def summary(result: SoakResult, instance: dg.DagsterInstance) -> dict[str, object]:
    with Ledger(result.ledger_url) as ledger:
        orders = sum(1 for _ in ledger.events(types=[EventType.ORDER_SUBMITTED.value]))
        unknown = sum(e.payload.get("status") == "unknown" for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value]))
        fills = sum(1 for _ in ledger.events(types=[EventType.FILL.value]))
        events = ledger.count()
    return {
        "sessions": len(sessions(result)),
        "days": result.days,
        "ticks": result.ticks,
        "runs": len(result.runs),
        "runs_launched": result.launched,  # retention deletes finished runs after QUANTLAKE_RETENTION_RUNS_DAYS
        "dagster_events": result.events,
        "retries": sum(is_retry(r) for r in result.runs),
        "alerts": len(result.alerts),
        "orders": orders,
        "fills": fills,
        "unknown_outcomes": unknown,
        "ledger_events": events,
        "seconds": round(result.seconds, 1),
        "seconds_per_day": round(result.seconds_per_day, 2),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "cpu_seconds_per_day": round(result.cpu_seconds / max(result.days, 1), 2),
    }


def halted_skips(instance: dg.DagsterInstance) -> set[datetime]:
    """Decision ticks the schedule skipped because trading was halted (a breaker or the kill switch)."""
    out = set()
    for state in instance.all_instigator_state():
        if state.instigator_name == "decision_schedule":
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, statuses=[TickStatus.SKIPPED]):
                if "halted" in (tick.skip_reason or ""):
                    out.add(datetime.fromtimestamp(tick.timestamp, UTC))
    return out


def check_source_down(result: SoakResult, instance: dg.DagsterInstance) -> tuple[set[str], list[str]]:
    """What the deployment did on the days its data source was down: (the failed run ids, what is wrong).

    Each ingest the schedules launched that day fails with the source's error after its step
    retries, is retried `max_retries` times by the run-retries daemon (failing again: the source is
    still down), and every failed run raises an alert. The next open's yearly ingest recovers the
    day's daily bar; the day's 1-minute bars stay missing (checked by check_partitions).
    A refetch of a down day's 1-minute bars that `missed_sessions_sensor` launches while the source is
    still down (a half day's grace ends before midnight) fails with the same error, and alerts.
    """
    from orchestration.sensors import REFETCH_RUN_TAG
    from tests.soak.harness import SOURCE_DOWN

    down = set(result.settings.source_down)
    failed: set[str] = set()
    problems: list[str] = []
    by_root: dict[str, list[dg.DagsterRun]] = {}
    runs = list({**result.history, **{r.run_id: r for r in result.runs}}.values())  # retention deletes runs older than its days
    for run in runs:
        by_root.setdefault(run.tags.get("dagster/root_run_id", run.run_id), []).append(run)
    originals = [r for r in runs if not is_retry(r) and r.job_name.startswith("ingest_") and "dagster/schedule_name" in r.tags and scheduled_at(r).astimezone(NY).date() in down]
    expected = sum(2 * len(result.settings.symbols) for d in down if d in sessions(result))
    if len(originals) != expected:
        problems.append(f"source down: {len(originals)} scheduled ingest runs on {sorted(down)}, expected {expected}")
    down_keys = {str(d) for d in down}
    refetched = [r for r in runs if not is_retry(r) and REFETCH_RUN_TAG in r.tags and r.tags.get("dagster/partition", "").split("|")[0] in down_keys]
    for original in originals + refetched:
        family = by_root.get(original.run_id, [])
        retries = [r for r in family if is_retry(r)]
        if original in originals and len(retries) != instance.run_retries_max_retries:
            problems.append(f"source down: run {original.run_id[:8]} retried {len(retries)} times, expected {instance.run_retries_max_retries}")
        for run in family:
            if original in refetched and run.status == dg.DagsterRunStatus.SUCCESS:
                continue  # the refetch after the outage: what it is for
            failed.add(run.run_id)
            if run.status != dg.DagsterRunStatus.FAILURE:
                problems.append(f"source down: run {run.run_id[:8]} {run.job_name} is {run.status.value}, expected FAILURE")
                continue
            errors = [result.failure_logs.get(run.run_id, "")]  # kept by the harness when the run failed
            errors += [str(e.dagster_event.event_specific_data) for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE) if e.dagster_event]
            if not any(SOURCE_DOWN in e for e in errors):
                problems.append(f"source down: run {run.run_id[:8]} failed without the source's error: {errors[:1]}")
            if not any(run.run_id in a for a in result.alerts):
                problems.append(f"source down: no alert for the failed run {run.run_id[:8]} {run.job_name}")
    return failed, problems


def check_broker_5xx(result: SoakResult) -> list[str]:
    """On the broker's bad days every order is recorded as an unknown outcome with the 503, and the
    account still matches the ledger (check_orders_and_ledger): the order was not sent again blind."""
    from tests.soak.harness import BROKER_5XX

    days = set(result.settings.broker_5xx)
    if not days:
        return []
    with Ledger(result.ledger_url) as ledger:
        submitted = [e for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value]) if e.recorded_at.astimezone(NY).date() in days]
    problems = [f"order {e.payload['client_order_id']} on a broker-5xx day recorded as {e.payload.get('status')}" for e in submitted if e.payload.get("status") != "unknown" or BROKER_5XX not in e.payload.get("error", "")]
    return problems


def check_flattens_fill(result: SoakResult) -> list[str]:
    """A flatten (the window's end, the kill switch) must leave the account flat: each closing order
    is filled within two sessions (the bar it fills at reaches the lake the day after)."""
    days = sessions(result)
    cutoff = days[-3] if len(days) >= 3 else None
    with Ledger(result.ledger_url) as ledger:
        closes = [e for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value]) if str(e.payload["client_order_id"]).startswith("close-")]
        filled = {e.payload["client_order_id"] for e in ledger.events(types=[EventType.FILL.value])}
    return [
        f"flatten order {e.payload['client_order_id'][:14]} ({e.symbol} {e.payload.get('side')} {e.payload.get('quantity')}, sent {e.recorded_at.astimezone(NY):%Y-%m-%d %H:%M}) never filled"
        for e in closes
        if cutoff is not None and e.recorded_at.astimezone(NY).date() <= cutoff and e.payload["client_order_id"] not in filled
    ]


def retention_policy_of(result: SoakResult) -> RetentionPolicy:
    """The policy the soak's retention runs read (the process environment under the soak's settings)."""
    return retention_policy({**os.environ, **environment(result.settings)})


def last_retention_now(result: SoakResult) -> datetime | None:
    """The `now` of the soak's last successful retention run (its scheduled time), if one ran."""
    done = [scheduled_at(r) for r in result.runs if r.job_name == "retention_job" and r.status == dg.DagsterRunStatus.SUCCESS]
    return max(done) if done else None


def retention_cutoffs(result: SoakResult) -> dict[str, datetime]:
    """Per kind, the instant before which the last retention run removed (or archived) everything."""
    now = last_retention_now(result)
    if now is None:
        return {}
    policy = retention_policy_of(result)
    days = {"runs": policy.runs_days, "ledger": policy.ledger_archive_days}
    return {kind: now - timedelta(days=n) for kind, n in days.items() if n != KEEP}


def check_retention(result: SoakResult, instance: dg.DagsterInstance) -> list[str]:
    """The storage left is within the configured retention, as of the last retention run: no
    quarantine, report or deletable run older than its days, and the ledger's old events archived
    (verified, a prefix of the ledger) — while every event stays in the ledger."""
    now = last_retention_now(result)
    if now is None:
        return []
    policy, cutoffs, problems = retention_policy_of(result), retention_cutoffs(result), []
    if policy.quarantine_days != KEEP:
        problems += [f"quarantine {p.relative_to(result.lake)} older than {policy.quarantine_days} days" for p in expired_quarantine(result.lake, now, policy.quarantine_days)]
    if policy.reports_days != KEEP:
        problems += [f"report {p.name} older than {policy.reports_days} days" for p in expired_reports(result.lake, now, policy.reports_days)]
    if "runs" in cutoffs:
        gone, _kept = expired_runs(instance, now, policy.runs_days)
        problems += [f"run {r.dagster_run.run_id[:8]} {r.dagster_run.job_name} of {r.create_timestamp:%Y-%m-%d} kept past {policy.runs_days} days" for r in gone]
    if "ledger" in cutoffs:
        folder = result.lake / "archive" / "ledger"
        try:
            archived = verify_archive(folder)
        except ArchiveError as exc:
            return [*problems, f"ledger archive: {exc}"]
        with Ledger(result.ledger_url) as ledger:
            events = list(ledger.events())
        due = next((i for i, e in enumerate(events) if e.recorded_at >= cutoffs["ledger"]), len(events))
        if archived < due or list(restore_events(folder)) != events[:archived]:
            problems.append(f"ledger archive holds {archived} events, the ledger's first {due} are older than {policy.ledger_archive_days} days (it must be their exact copy)")
    return problems


def check_all(result: SoakResult) -> tuple[dict[str, object], list[str]]:
    """Everything above on a finished soak: (its summary, what is wrong)."""
    with dg.DagsterInstance.from_config(str(result.home)) as instance:
        failed, fault_problems = check_source_down(result, instance)
        parity = check_equity_vs_backtest(result)
        problems = [
            *fault_problems,
            *check_broker_5xx(result),
            *check_flattens_fill(result),
            *check_scheduled_runs(result, halted_skips(instance)),
            *check_runs_succeeded(result, failed),
            *check_ticks(instance),
            *check_partitions(result, instance),
            *check_reports(result),
            *check_orders_and_ledger(result),
            *check_retention(result, instance),
            *parity.problems,
        ]
        return {**summary(result, instance), **parity.as_dict()}, problems
