"""Alerts read from the ledger: every intervention once, and one P&L summary per session after its close.

- `intervention_alert_sensor`: each intervention event (breaker trip, kill switch, resume, flatten,
  budget stop; not "blocked", which is one per refused order and follows a trip already alerted)
  posts one alert. The cursor is the last ledger `seq` handled and the events handled in the last
  REREAD positions (re-read each tick: on PostgreSQL a lower seq can commit after a higher one);
  Dagster persists it with the sensor, so a restart resumes after it. A webhook that fails stops the
  tick there: the next tick retries from that event (nothing lost, nothing repeated once accepted). With no cursor yet (a sensor just turned
  on), interventions older than QUANTLAKE_ALERT_LOOKBACK_H hours (default 24) are not alerted.
- `daily_pnl_summary_sensor`: after each session's close (the exchange calendar, half days included),
  the session's opening and closing equity (its first and last marks), P&L, orders, fills, rejections,
  interventions and model cost. The cursor is the last session summarized.
Each alert carries the ledger's `event_id` (or the session) as `alert_id`, for a receiver to deduplicate.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.alerts import send_alert, webhook_url
from orchestration.settings import Settings, settings
from trading.events import CostPayload, EventType, InterventionPayload, ReconciliationPayload

QUIET = frozenset({"blocked"})
REREAD = 1_000  # ledger positions re-read behind the cursor (late commits); handled ids are kept for them
MAX_SESSIONS = 5  # after a long outage, the last few sessions' summaries, not a flood


def _deliver(title: str, details: dict[str, Any], level: int = logging.ERROR) -> bool:
    """True when the alert is done with: accepted by the webhook, or logged when none is configured."""
    accepted = send_alert(title, details, level=level)
    return accepted or webhook_url() is None


def _now() -> datetime:
    return datetime.now(UTC)


def _trading() -> Any:
    """The Definitions' trading resource for the settings of the moment: built once per distinct
    settings, not at every evaluation (~2 ms of pydantic work each, twice a daemon tick)."""
    return _trading_for(settings())


@functools.lru_cache(maxsize=4)
def _trading_for(env: Settings) -> Any:
    from orchestration.resources import trading_resource

    return trading_resource(env)  # frozen, and a function of the settings alone


def _no_ledger_yet(trading: Any) -> str | None:
    """A SQLite ledger no run has created yet is not created by a sensor (a run migrates it)."""
    from trading.ledger.store import default_url

    url = trading.ledger_url or default_url()
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return f"no ledger yet at {path}"
    return None


def _load(cursor: str | None) -> tuple[int, dict[str, int]]:
    """(the highest seq handled, {event_id: seq} handled in the re-read window)."""
    if not cursor:
        return 0, {}
    if cursor.isdigit():  # a plain seq
        return int(cursor), {}
    state = json.loads(cursor)
    return int(state["seq"]), {str(k): int(v) for k, v in state["done"].items()}


@dg.sensor(
    name="intervention_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,  # a safety alert is on unless someone turns it off
    description="An alert (log + QUANTLAKE_ALERT_WEBHOOK) for every breaker trip, kill switch and resume in the ledger, once each.",
)
def intervention_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    seq, done = _load(context.cursor)
    since = None if context.cursor else _now() - timedelta(hours=settings().alert_lookback_h)
    sent = 0
    trading = _trading()
    if missing := _no_ledger_yet(trading):
        return dg.SkipReason(missing)
    ledger = trading.ledger()
    try:
        # Re-read a window behind the cursor: on PostgreSQL a lower seq can commit after a higher one.
        for at, event in ledger.events_with_seq(types=[EventType.INTERVENTION.value], after_seq=max(0, seq - REREAD)):
            if event.event_id in done:
                continue
            intervention = event.typed()
            assert isinstance(intervention, InterventionPayload)
            kind = str(intervention.kind)
            stamp = event.as_of or event.recorded_at
            if kind not in QUIET and (since is None or stamp >= since):
                reason = intervention.reason or intervention.detail or ""
                details = {
                    "alert_id": event.event_id,
                    "kind": kind,
                    "reason": reason,
                    "run_id": event.run_id,
                    "mode": event.mode.value,
                    "symbol": event.symbol,
                    "at": stamp.isoformat(),
                    "seq": at,
                    **{k: v for k, v in event.payload.items() if k not in ("kind", "reason")},  # every field as recorded
                }
                if not _deliver(f"Quantlake {kind}: {reason}", details):
                    seq = min(seq, at - 1)  # the webhook failed: retried from this event next tick
                    break
                sent += 1
            done[event.event_id] = at
            seq = max(seq, at)
    finally:
        ledger.close()
        kept = {k: v for k, v in done.items() if v > seq - REREAD}
        context.update_cursor(json.dumps({"seq": seq, "done": kept}, sort_keys=True))
    return dg.SkipReason(f"{sent} intervention alert(s) sent; ledger read up to seq {seq}")


def session_summary(ledger: Any, day: date, exchange: str) -> dict[str, Any]:
    """The session's marks, orders, fills, rejections, interventions and model cost (exchange-local date)."""
    from lake.calendar import get_calendar

    tz = get_calendar(exchange).tz
    key = day.isoformat()
    opening = closing = None
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    cost = 0.0
    types = [t.value for t in (EventType.RECONCILIATION, EventType.ORDER_SUBMITTED, EventType.FILL, EventType.REJECTION, EventType.INTERVENTION, EventType.COST)]
    for event in ledger.events(types=types):
        p = event.typed()
        if "session" in p.model_fields_set:  # recorded with its exchange session (a declared field or an extra one)
            on_day = getattr(p, "session", None) == key
        else:
            on_day = (event.as_of or event.recorded_at).astimezone(tz).date() == day
        if not on_day:
            continue
        counts[event.type.value] += 1
        if isinstance(p, ReconciliationPayload) and p.ok and p.equity is not None:
            opening = p.equity if opening is None else opening
            closing = p.equity
        elif isinstance(p, InterventionPayload):
            kinds[str(p.kind)] += 1
        elif isinstance(p, CostPayload) and p.scope == "run":
            cost += p.run_cost_usd
    pnl = closing - opening if opening is not None and closing is not None else None
    return {
        "session": key,
        "opening_equity": opening,
        "closing_equity": closing,
        "pnl": pnl,
        "pnl_pct": pnl / opening if pnl is not None and opening else None,
        "orders": counts[EventType.ORDER_SUBMITTED.value],
        "fills": counts[EventType.FILL.value],
        "rejections": counts[EventType.REJECTION.value],
        "interventions": dict(sorted(kinds.items())),
        "model_cost_usd": round(cost, 6),
    }


@dg.sensor(
    name="daily_pnl_summary_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each session's close: the day's P&L, orders, fills, rejections, interventions and model cost, as an alert.",
)
def daily_pnl_summary_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    from assets.partitions import last_closed_session
    from lake.calendar import trading_days

    venue = settings().exchange
    closed = last_closed_session(_now(), venue)
    done = date.fromisoformat(context.cursor) if context.cursor else closed - timedelta(days=1)
    todo = trading_days(done + timedelta(days=1), closed, venue)[-MAX_SESSIONS:] if closed > done else []
    if not todo:
        return dg.SkipReason(f"session {done} already summarized; the next after its close")
    trading = _trading()
    if missing := _no_ledger_yet(trading):
        return dg.SkipReason(missing)
    ledger = trading.ledger()
    try:
        for day in todo:
            s = session_summary(ledger, day, venue)
            pnl = "no marks" if s["pnl"] is None else f"P&L {s['pnl']:+,.2f} ({s['pnl_pct']:+.2%})"
            title = f"Quantlake {day}: {pnl}, {s['orders']} orders, {s['fills']} fills, {s['rejections']} rejections"
            if not _deliver(title, {"alert_id": f"daily_pnl|{day}", "mode": trading.mode, **s}, level=logging.INFO):
                break
            context.update_cursor(day.isoformat())
    finally:
        ledger.close()
    return dg.SkipReason(f"summarized up to {context.cursor}")


ALERT_SENSORS = [intervention_alert_sensor, daily_pnl_summary_sensor]
