"""Everything the trading loop reads from the ledger, folded in ONE pass over its events.

A `Projection` is the ledger's state after its events in `seq` order: the portfolio (`Portfolio`,
average cost), the halt state and the session's breaker marks (`SafetyState`: kill switch or
drawdown until a resume, the session's opening equity and the peak since the last resume, daily loss
and trades per session), the orders sent, the model spend and tokens per day, the recent decisions
and, per UTC minute, what the day summary counts. Queries (`safety(session)`, `spent_on(day)`,
`day_summary(day, ...)`) read the fold; none re-reads the ledger.

`project(ledger)` keeps one projection per `Ledger` object and brings it up to date with only the
events written since (`seq > last`), so a cycle that asks ten times reads the ledger once. On
PostgreSQL, sequence values can commit out of order: before catching up, the events at or below the
last seq read are counted, and a late commit among them means a fresh pass.

Across processes: a new process would pay a full pass (seconds on a 1 M-event ledger), so `project`
starts from the ledger's snapshot (`ledger_snapshots`: the fold as JSON, the last seq it covers, the
events it folded) and folds only newer events; it saves a new one once `SNAPSHOT_EVERY` events were
folded past the last. A snapshot carries `CODE_VERSION`, a hash of the fold's source (this module,
the portfolio, the payload models): any change to them ignores (and later replaces) older snapshots,
so a snapshot is never read by code that would have folded differently. Snapshot plus tail equals a
full pass (tests/trading/test_projections.py).

Payloads are read through their typed models (`trading.events`), which the ledger validated on write;
FILL and DEPOSIT go to `Portfolio.apply_payload` and DECISION payloads are passed through as
recorded (the day summary's executed rows, the agents' recent decisions): the hot paths of a 1 M
event replay, read without building a model per event.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any, Protocol, cast

from strategies import controls
from trading.events import (
    CostPayload,
    Event,
    EventType,
    InterventionPayload,
    OrderSubmittedPayload,
    ReconciliationPayload,
    validate_payload,
)
from trading.ledger.portfolio import Portfolio
from trading.ledger.store import Ledger, LedgerError, Snapshot
from trading.risk import RiskLimits

log = logging.getLogger(__name__)

HALTS = frozenset({"kill_switch", "drawdown", "breaker"})  # until resume ("breaker": ledgers before the split)
SESSION_TRIPS = frozenset({"daily_loss", "trades_per_day", "flatten"})  # once per session
RECENT_DECISIONS = 200  # what the agents' tools see of past decisions
RECENT_CALL_COSTS = 20  # model cost per call, for a run's estimate
EXECUTED_KEYS = ("symbol", "side", "quantity", "entry", "stop", "rationale")

_T = EventType
# Types whose payload the fold reads; the others are only counted (their payload is not even decoded).
PAYLOAD_TYPES = (_T.DEPOSIT, _T.FILL, _T.ORDER_SUBMITTED, _T.RECONCILIATION, _T.INTERVENTION, _T.COST, _T.DECISION)
_DEPOSIT, _FILL, _ORDER, _MARK, _INTERVENTION, _COST, _DECISION = (t.value for t in PAYLOAD_TYPES)


class EventSource(Protocol):
    def events(self) -> Iterable[Event]: ...


@dataclass(frozen=True)
class SafetyState:
    """The ledger's interventions, marks and orders, as of one session."""

    session: date
    halted: str | None = None  # kill switch or drawdown, until resume
    daily_loss: str | None = None  # tripped in this session
    session_open_equity: float | None = None
    peak_equity: float | None = None
    trades_today: int = 0
    tripped_today: frozenset[str] = frozenset()  # intervention kinds recorded in this session
    known_orders: frozenset[str] = frozenset()  # client ids in the ledger
    sent_orders: frozenset[str] = frozenset()  # client ids the broker confirmed

    def no_new_risk(self, limits: RiskLimits) -> str | None:
        """Why no position may be opened or added to now (ledger state only), else None."""
        if self.halted:
            return self.halted
        if self.daily_loss:
            return self.daily_loss
        if controls.trades_spent(self.trades_today, limits.max_trades_per_day):
            return f"trades_per_day: {self.trades_today} orders in the session {self.session} >= {limits.max_trades_per_day}"
        return None


@dataclass
class Bucket:
    """One UTC minute of events (by `as_of`, else `recorded_at`); items keep their seq to sort a day."""

    counts: dict[str, int] = field(default_factory=dict)
    costs: list[tuple[int, float]] = field(default_factory=list)
    interventions: list[tuple[int, str]] = field(default_factory=list)
    executed: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _minute(value: datetime | None) -> str | None:
    """'YYYY-MM-DD HH:MM' in UTC, as `Ledger.rows` gives it."""
    if value is None:
        return None
    stamp = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return stamp.isoformat(" ")[:16]


@dataclass
class Projection:
    portfolio: Portfolio = field(default_factory=Portfolio)
    # Safety: halts and the peak since the last resume; per session (its ISO date) the opening mark,
    # the daily loss and the session's trips since the last resume, and the orders (never reset).
    halted: str | None = None
    peak_equity: float | None = None
    opening: dict[str, float] = field(default_factory=dict)
    daily_loss: dict[str, str] = field(default_factory=dict)
    tripped: dict[str, set[str]] = field(default_factory=dict)
    trades: Counter[str] = field(default_factory=Counter)
    known_orders: set[str] = field(default_factory=set)
    sent_orders: set[str] = field(default_factory=set)
    # Model spend of the runs (scope "run"), per UTC date of the decision bar.
    spent: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    call_costs: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_CALL_COSTS))
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_DECISIONS))
    buckets: dict[str, Bucket] = field(default_factory=dict)
    last_seq: int = 0
    applied: int = 0
    _stamp: str | None = field(default=None, repr=False, compare=False)
    _bucket: Bucket | None = field(default=None, repr=False, compare=False)

    # -- the fold -------------------------------------------------------------------------------------

    def apply(self, seq: int, type_: str, stamp: str | None, as_of: str | None, payload: dict[str, Any] | None, v: int) -> None:
        """One event: its UTC minutes (`as_of` else `recorded_at`; `as_of`) and payload (None: only counted)."""
        self.apply_rows([(seq, type_, stamp, as_of, payload, v)])

    def apply_rows(self, rows: Iterable[tuple[int, str, str | None, str | None, dict[str, Any] | None, int]]) -> None:
        """Events in `seq` order, as `Ledger.rows` gives them (the hot loop of a replay: locals only)."""
        buckets, stamp_now, bucket = self.buckets, self._stamp, self._bucket
        apply_payload, remember = self.portfolio.apply_payload, self.decisions.append
        seq, n = self.last_seq, 0
        for seq, type_, stamp, as_of, payload, v in rows:
            n += 1
            if stamp != stamp_now:  # events come in bursts of the same minute: one lookup per burst
                stamp_now = stamp
                if stamp is None:
                    bucket = None
                else:
                    bucket = buckets.get(stamp)
                    if bucket is None:
                        bucket = buckets[stamp] = Bucket()
            if bucket is not None:
                counts = bucket.counts
                counts[type_] = counts.get(type_, 0) + 1
            if payload is None:
                continue
            if type_ in (_FILL, _DEPOSIT):
                apply_payload(type_, payload)
            elif type_ == _DECISION:
                remember(payload)
                if bucket is not None and payload.get("verdict") == "EXECUTE":
                    bucket.executed.append((seq, {k: payload.get(k) for k in EXECUTED_KEYS}))
            elif type_ != _COST or payload.get("scope") == "run":  # only the runs' summaries are read of costs
                self._typed(seq, type_, as_of, payload, v, bucket)
        self.last_seq, self.applied, self._stamp, self._bucket = seq, self.applied + n, stamp_now, bucket

    def _typed(self, seq: int, type_: str, as_of: str | None, payload: dict[str, Any], v: int, bucket: Bucket | None) -> None:
        if type_ == _ORDER:
            self._order(cast(OrderSubmittedPayload, validate_payload(type_, payload, v)))
        elif type_ == _MARK:
            self._mark(cast(ReconciliationPayload, validate_payload(type_, payload, v)))
        elif type_ == _INTERVENTION:
            p = cast(InterventionPayload, validate_payload(type_, payload, v))
            self._intervention(p)
            if bucket is not None:
                bucket.interventions.append((seq, f"{p.kind}: {p.reason}"))
        elif type_ == _COST:
            self._cost(cast(CostPayload, validate_payload(type_, payload, v)), as_of, bucket, seq)

    def _order(self, p: OrderSubmittedPayload) -> None:
        if p.client_order_id:
            self.known_orders.add(p.client_order_id)
            if p.broker_order_id:
                self.sent_orders.add(p.client_order_id)
        if p.session is not None:
            self.trades[p.session] += 1

    def _mark(self, p: ReconciliationPayload) -> None:
        if not p.ok or p.equity is None:
            return
        self.peak_equity = p.equity if self.peak_equity is None else max(self.peak_equity, p.equity)
        if p.session is not None and p.session not in self.opening:
            self.opening[p.session] = p.equity

    def _intervention(self, p: InterventionPayload) -> None:
        if p.kind == "resume":
            self.halted = self.peak_equity = None
            self.opening.clear()
            self.daily_loss.clear()
            self.tripped.clear()
        elif p.kind in HALTS:
            self.halted = f"{p.kind}: {p.reason}"
        elif p.session is not None and p.kind in SESSION_TRIPS:
            self.tripped.setdefault(p.session, set()).add(p.kind)
            if p.kind == "daily_loss":
                self.daily_loss[p.session] = f"daily_loss: {p.reason}"

    def _cost(self, c: CostPayload, as_of_minute: str | None, bucket: Bucket | None, seq: int) -> None:
        if c.model_calls:
            self.call_costs.append(c.run_cost_usd / c.model_calls)
        if as_of_minute is not None:
            day = as_of_minute[:10]
            self.spent[day] = self.spent.get(day, 0.0) + c.run_cost_usd
            self.tokens[day] = self.tokens.get(day, 0) + c.prompt_tokens + c.completion_tokens
        if bucket is not None:
            bucket.costs.append((seq, c.run_cost_usd))

    # -- queries --------------------------------------------------------------------------------------

    def safety(self, session: date) -> SafetyState:
        key = session.isoformat()
        with _LOCK:  # another thread may be catching the same projection up
            return SafetyState(
                session,
                self.halted,
                self.daily_loss.get(key),
                self.opening.get(key),
                self.peak_equity,
                self.trades.get(key, 0),
                frozenset(self.tripped.get(key, ())),
                frozenset(self.known_orders),
                frozenset(self.sent_orders),
            )

    def spent_on(self, day: date) -> tuple[float, list[float]]:
        """Money the runs with a decision bar on `day` (UTC) spent, and the recent costs per model call."""
        with _LOCK:
            return self.spent.get(day.isoformat(), 0.0), list(self.call_costs)

    def tokens_on(self, day: date) -> int:
        return self.tokens.get(day.isoformat(), 0)

    def recent_decisions(self, limit: int = RECENT_DECISIONS) -> list[dict[str, Any]]:
        if limit > RECENT_DECISIONS:
            raise ValueError(f"the projection keeps the last {RECENT_DECISIONS} decisions, not {limit}")
        with _LOCK:
            return list(self.decisions)[-limit:] if limit > 0 else []

    def day_summary(self, day: date, marks: Mapping[str, float], tz: tzinfo) -> dict[str, Any]:
        """What happened on `day` (event time in `tz`): decisions, orders, fills, costs, halts; the account now."""
        counts: Counter[str] = Counter()
        costs: list[tuple[int, float]] = []
        interventions: list[tuple[int, str]] = []
        executed: list[tuple[int, dict[str, Any]]] = []
        with _LOCK:
            buckets = list(self.buckets.items())
        for key, bucket in buckets:
            if datetime.fromisoformat(f"{key}:00+00:00").astimezone(tz).date() != day:
                continue
            counts.update(bucket.counts)
            costs += bucket.costs
            interventions += bucket.interventions
            executed += bucket.executed
        cost = 0.0
        for _seq, usd in sorted(costs, key=lambda x: x[0]):  # summed in ledger order, as recorded
            cost += usd
        ordered: dict[str, int] = {t.value: counts[t.value] for t in EventType if counts[t.value]}
        p = self.portfolio
        return {
            "day": day.isoformat(),
            "events": ordered,
            "decisions": counts[_DECISION],
            "executed": [row for _seq, row in sorted(executed, key=lambda x: x[0])],
            "orders": counts[_ORDER],
            "fills": counts[_FILL],
            "rejections": counts[EventType.REJECTION.value],
            "model_cost_usd": round(cost, 6),
            "interventions": [text for _seq, text in sorted(interventions, key=lambda x: x[0])],
            "cash": p.cash,
            "positions": {s: q for s, q in p.positions.items() if q},
            "equity": p.equity(marks),
            "realized_pnl": p.realized_pnl,
            "unrealized_pnl": p.unrealized_pnl(marks),
        }


# -- snapshots --------------------------------------------------------------------------------------

SNAPSHOT_NAME = "projection"
SNAPSHOT_EVERY = 50_000  # events folded past the stored snapshot before a new one is saved


def _code_version() -> str:
    """A hash of the source the fold's result depends on: another fold, another version."""
    import trading.events as events_module
    import trading.ledger.portfolio as portfolio_module

    digest = hashlib.sha256()
    for module in (__file__, portfolio_module.__file__, events_module.__file__):
        with open(module, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()[:16]


CODE_VERSION = _code_version()


def to_json(p: Projection) -> str:
    """The projection's state as JSON text (floats round-trip exactly; sets sorted)."""
    pf = p.portfolio
    state = {
        "portfolio": [pf.cash, pf.positions, pf.avg_cost, pf.realized_pnl, pf.commissions, pf.fills],
        "halted": p.halted,
        "peak_equity": p.peak_equity,
        "opening": p.opening,
        "daily_loss": p.daily_loss,
        "tripped": {k: sorted(v) for k, v in p.tripped.items()},
        "trades": dict(p.trades),
        "known_orders": sorted(p.known_orders),
        "sent_orders": sorted(p.sent_orders),
        "spent": p.spent,
        "tokens": p.tokens,
        "call_costs": list(p.call_costs),
        "decisions": list(p.decisions),
        "buckets": {k: [b.counts, b.costs, b.interventions, b.executed] for k, b in p.buckets.items()},
        "last_seq": p.last_seq,
        "applied": p.applied,
    }
    return json.dumps(state, allow_nan=False, separators=(",", ":"))


def from_json(text: str) -> Projection:
    s = json.loads(text)
    cash, positions, avg_cost, realized, commissions, fills = s["portfolio"]
    return Projection(
        portfolio=Portfolio(cash, positions, avg_cost, realized, commissions, fills),
        halted=s["halted"],
        peak_equity=s["peak_equity"],
        opening=s["opening"],
        daily_loss=s["daily_loss"],
        tripped={k: set(v) for k, v in s["tripped"].items()},
        trades=Counter(s["trades"]),
        known_orders=set(s["known_orders"]),
        sent_orders=set(s["sent_orders"]),
        spent=s["spent"],
        tokens=s["tokens"],
        call_costs=deque(s["call_costs"], maxlen=RECENT_CALL_COSTS),
        decisions=deque(s["decisions"], maxlen=RECENT_DECISIONS),
        buckets={
            k: Bucket(counts, [(q, c) for q, c in costs], [(q, t) for q, t in halts], [(q, row) for q, row in executed])
            for k, (counts, costs, halts, executed) in s["buckets"].items()
        },
        last_seq=s["last_seq"],
        applied=s["applied"],
    )


def _from_snapshot(ledger: Ledger) -> tuple[Projection, int]:
    """The ledger's snapshot of this code version (else an empty projection), and the seq it covers."""
    try:
        snapshot = ledger.load_snapshot(SNAPSHOT_NAME)
    except LedgerError as error:  # only a shortcut: without it, the full pass
        log.warning("projection snapshot unreadable, folding the whole ledger: %s", error)
        return _base(ledger), 0
    if snapshot is None or snapshot.version != CODE_VERSION:
        return _base(ledger), 0
    return from_json(snapshot.data), snapshot.last_seq


def _base(ledger: Ledger) -> Projection:
    """Where a full pass starts: empty, or on a compacted ledger the fold of the events it removed,
    read back from their archive (trading/ledger/compaction.py)."""
    from trading.ledger.compaction import archived_rows, compacted

    projection = Projection()
    projection.apply_rows(archived_rows(compacted(ledger)))
    return projection


def _save_snapshot(ledger: Ledger, projection: Projection) -> None:
    snapshot = Snapshot(SNAPSHOT_NAME, CODE_VERSION, projection.last_seq, projection.applied, to_json(projection))
    try:
        ledger.save_snapshot(snapshot)
    except LedgerError as error:  # e.g. a read-only database user: the next process folds more, nothing else
        log.warning("projection snapshot not saved: %s", error)


def fold(events: Iterable[Event], projection: Projection | None = None) -> Projection:
    """The projection of plain events (a `MemorySink`'s, a test's), in their order; continues
    `projection` (their seqs after its last) when given."""
    projection = projection or Projection()
    projection.apply_rows(
        (seq, e.type.value, _minute(e.as_of or e.recorded_at), _minute(e.as_of), e.payload if e.type.value in _WANTED else None, e.v)
        for seq, e in enumerate(events, start=projection.last_seq + 1)
    )
    return projection


_WANTED = frozenset(t.value for t in PAYLOAD_TYPES)
_CACHE: weakref.WeakKeyDictionary[Ledger, Projection] = weakref.WeakKeyDictionary()
_SAVED: weakref.WeakKeyDictionary[Ledger, int] = weakref.WeakKeyDictionary()  # seq of the ledger's snapshot
_LOCK = threading.RLock()  # guards catching up (and reading) the kept projections


def _catch_up(ledger: Ledger, projection: Projection) -> Projection:
    from trading.ledger.compaction import compacted

    removed = compacted(ledger)
    if projection.last_seq < removed.up_to_seq:  # compaction removed events this fold had yet to read
        projection = _from_snapshot(ledger)[0]
    if ledger.dialect == "postgresql" and projection.applied and ledger.count(until_seq=projection.last_seq) + removed.events != projection.applied:
        projection = _base(ledger)  # a transaction committed below what was read: read everything again
    # The fold keeps many small containers (executed rows, buckets): the cyclic collector would scan
    # them again and again during a long pass (~20 % of it) while finding nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        projection.apply_rows(ledger.rows(after_seq=projection.last_seq, payload_types=PAYLOAD_TYPES))
    finally:
        if collecting:
            gc.enable()
    return projection


def project(source: Ledger | EventSource | Iterable[Event]) -> Projection:
    """The projection of a ledger, up to date (kept per `Ledger` and caught up), or of events."""
    if isinstance(source, Ledger):
        with _LOCK:
            projection = _CACHE.get(source)
            if projection is None:  # a new process (or Ledger object): from the stored snapshot on
                projection, saved = _from_snapshot(source)
                _SAVED[source] = saved
            projection = _catch_up(source, projection)
            _CACHE[source] = projection
            if projection.last_seq - _SAVED.get(source, 0) >= SNAPSHOT_EVERY:
                _save_snapshot(source, projection)
                _SAVED[source] = projection.last_seq
            return projection
    events = getattr(source, "events", source)  # a method (an event log) or a list (`MemorySink.events`)
    return fold(cast(Iterable[Event], events() if callable(events) else events))


def cached(ledger: Ledger) -> Projection | None:
    """The ledger's projection, caught up, if one was made already (else None: nothing is read)."""
    with _LOCK:
        projection = _CACHE.get(ledger)
        if projection is None:
            return None
        projection = _CACHE[ledger] = _catch_up(ledger, projection)
        return projection
