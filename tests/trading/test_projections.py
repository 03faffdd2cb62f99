"""The one-pass projection equals the per-field reads it replaced; typed payloads; old ledgers read.

`_old_*` below are the readers as they were before `trading.ledger.projections` (each its own pass
over the ledger's events, `payload.get` on untyped dicts), kept here as the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.cycle import day_summary, spent_on, tokens_on
from trading.events import PAYLOAD_VERSION, Event, EventType, FillPayload, PayloadError
from trading.ledger import Ledger, LedgerError, Portfolio, project, replay_portfolio
from trading.ledger.projections import fold
from trading.models import Mode
from trading.safety import SafetyState, read_state

NY = ZoneInfo("America/New_York")
T0 = datetime(2024, 3, 4, 3, 0, tzinfo=UTC)  # 22:00 in New York the day before: dates differ by zone
DAYS = [date(2024, 3, 3), date(2024, 3, 4), date(2024, 3, 5)]
SYMBOLS = ["AAPL", "MSFT"]

# -- the readers as they were ---------------------------------------------------------------------------


def _old_read_state(events: list[Event], session: date) -> SafetyState:
    key = session.isoformat()
    halted = daily = None
    opening = peak = None
    trades = 0
    tripped: set[str] = set()
    known: set[str] = set()
    sent: set[str] = set()
    for e in events:
        p = e.payload
        if e.type == EventType.ORDER_SUBMITTED:
            cid = p.get("client_order_id")
            if cid:
                known.add(cid)
                if p.get("broker_order_id"):
                    sent.add(cid)
            trades += p.get("session") == key
        elif e.type == EventType.RECONCILIATION:
            equity = p.get("equity")
            if not p.get("ok") or equity is None:
                continue
            peak = equity if peak is None else max(peak, equity)
            if opening is None and p.get("session") == key:
                opening = equity
        elif e.type == EventType.INTERVENTION:
            kind = p.get("kind")
            if kind == "resume":
                halted = daily = opening = peak = None
                tripped.clear()
            elif kind in ("kill_switch", "drawdown", "breaker"):
                halted = f"{kind}: {p.get('reason', '')}"
            elif p.get("session") == key and kind in ("daily_loss", "trades_per_day", "flatten"):
                tripped.add(kind)
                if kind == "daily_loss":
                    daily = f"daily_loss: {p.get('reason', '')}"
    return SafetyState(session, halted, daily, opening, peak, trades, frozenset(tripped), frozenset(known), frozenset(sent))


def _old_spent_on(events: list[Event], day: date) -> tuple[float, list[float]]:
    spent, per_call = 0.0, []
    for event in (e for e in events if e.type == EventType.COST):
        if event.payload.get("scope") != "run":
            continue
        calls = event.payload.get("model_calls", 0)
        if calls:
            per_call.append(event.payload["run_cost_usd"] / calls)
        if event.as_of is not None and event.as_of.astimezone(UTC).date() == day:
            spent += float(event.payload.get("run_cost_usd", 0.0))
    return spent, per_call[-20:]


def _old_tokens_on(events: list[Event], day: date) -> int:
    return sum(
        int(e.payload.get("prompt_tokens", 0)) + int(e.payload.get("completion_tokens", 0))
        for e in events
        if e.type == EventType.COST and e.payload.get("scope") == "run" and e.as_of is not None and e.as_of.astimezone(UTC).date() == day
    )


def _old_day_summary(events: list[Event], day: date, marks: dict[str, float]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    cost = 0.0
    interventions: list[str] = []
    executed: list[dict[str, Any]] = []
    for event in events:
        stamp = event.as_of or event.recorded_at
        if stamp.astimezone(NY).date() != day:
            continue
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
        if event.type == EventType.COST and event.payload.get("scope") == "run":
            cost += float(event.payload.get("run_cost_usd", 0.0))
        elif event.type == EventType.INTERVENTION:
            interventions.append(f"{event.payload.get('kind')}: {event.payload.get('reason', '')}")
        elif event.type == EventType.DECISION and event.payload.get("verdict") == "EXECUTE":
            executed.append({k: event.payload.get(k) for k in ("symbol", "side", "quantity", "entry", "stop", "rationale")})
    portfolio = replay_portfolio(events)
    return {
        "day": day.isoformat(),
        "events": counts,
        "decisions": counts.get(EventType.DECISION.value, 0),
        "executed": executed,
        "orders": counts.get(EventType.ORDER_SUBMITTED.value, 0),
        "fills": counts.get(EventType.FILL.value, 0),
        "rejections": counts.get(EventType.REJECTION.value, 0),
        "model_cost_usd": round(cost, 6),
        "interventions": interventions,
        "cash": portfolio.cash,
        "positions": {s: q for s, q in portfolio.positions.items() if q},
        "equity": portfolio.equity(marks),
        "realized_pnl": portfolio.realized_pnl,
        "unrealized_pnl": portfolio.unrealized_pnl(marks),
    }


# -- generated ledgers ----------------------------------------------------------------------------------

sessions = st.sampled_from(["2024-03-04", "2024-03-04", "2024-03-05", "2024-03-03", None])
money = st.floats(min_value=1.0, max_value=1e6, allow_nan=False)
ids = st.sampled_from(["ql-a", "ql-b", "ql-c", "ql-d", ""])

payloads: st.SearchStrategy[tuple[EventType, dict[str, Any]]] = st.one_of(
    st.tuples(st.just(EventType.DEPOSIT), st.fixed_dictionaries({"amount": money})),
    st.tuples(
        st.just(EventType.FILL),
        st.fixed_dictionaries(
            {
                "fill_id": st.uuids().map(lambda u: u.hex),
                "client_order_id": ids,
                "symbol": st.sampled_from(SYMBOLS),
                "side": st.sampled_from(["buy", "sell"]),
                "quantity": st.integers(1, 50).map(float),
                "price": st.floats(min_value=1.0, max_value=500.0),
                "commission": st.sampled_from([0.0, 0.35, 1.0]),
                "ts": st.just("2024-03-04T15:00:00Z"),
            }
        ),
    ),
    st.tuples(
        st.just(EventType.ORDER_SUBMITTED),
        st.fixed_dictionaries({"client_order_id": ids, "session": sessions}, optional={"broker_order_id": st.sampled_from(["b-1", "", None])}),
    ),
    st.tuples(
        st.just(EventType.RECONCILIATION),
        st.fixed_dictionaries({"session": sessions, "ok": st.sampled_from([True, True, False]), "equity": st.one_of(money, money, st.none())}, optional={"cash": money}),
    ),
    st.tuples(
        st.just(EventType.INTERVENTION),
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["resume", "kill_switch", "drawdown", "breaker", "daily_loss", "daily_loss", "trades_per_day", "flatten", "flatten", "blocked", "budget"])},
            optional={"reason": st.sampled_from(["why", "because"]), "session": sessions},
        ),
    ),
    st.tuples(
        st.just(EventType.COST),
        st.fixed_dictionaries(
            {"scope": st.sampled_from(["run", "call"]), "run_cost_usd": st.floats(0, 0.1)},
            optional={"model_calls": st.integers(0, 5), "prompt_tokens": st.integers(0, 5000), "completion_tokens": st.integers(0, 500)},
        ),
    ),
    st.tuples(
        st.just(EventType.DECISION),
        st.fixed_dictionaries(
            {"verdict": st.sampled_from(["EXECUTE", "HOLD"]), "symbol": st.sampled_from(SYMBOLS), "rationale": st.just("r")},
            optional={"side": st.just("buy"), "quantity": st.floats(0, 100), "entry": money, "stop": money},
        ),
    ),
    st.tuples(st.sampled_from([EventType.REJECTION, EventType.SIGNAL, EventType.PROMPT, EventType.CANCEL]), st.just({})),
)


@st.composite
def ledgers(draw: st.DrawFn) -> list[Event]:
    """Events over three days around New York's midnight; some without `as_of` (their recorded time counts)."""
    drawn = draw(st.lists(st.tuples(payloads, st.integers(0, 3 * 24 * 60), st.booleans()), min_size=12, max_size=80))
    events = []
    for (type_, payload), minutes, has_as_of in drawn:
        at = T0 + timedelta(minutes=minutes, seconds=7)
        events.append(Event(type=type_, run_id="r", mode=Mode.SIMULATION, payload=payload, as_of=at if has_as_of else None, recorded_at=at + timedelta(minutes=90)))
    return events


def _check(events: list[Event], source: Ledger | list[Event]) -> None:
    marks = {"AAPL": 101.0}
    projection = project(source)
    for day in DAYS:
        state = read_state(source, day) if isinstance(source, Ledger) else projection.safety(day)
        assert state == _old_read_state(events, day)
        assert projection.spent_on(day) == _old_spent_on(events, day)
        assert projection.tokens_on(day) == _old_tokens_on(events, day)
        assert projection.day_summary(day, marks, NY) == _old_day_summary(events, day, marks)
    assert projection.portfolio == replay_portfolio(events)
    assert projection.recent_decisions() == [e.payload for e in events if e.type == EventType.DECISION][-200:]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=ledgers(), split=st.floats(0, 1))
def test_the_projection_equals_the_old_reads(events: list[Event], split: float) -> None:
    """On a generated ledger, written in two parts (the projection catches up in between)."""
    _check(events, events)  # plain events
    cut = int(len(events) * split)
    with Ledger("sqlite://") as ledger:
        ledger.append_many(events[:cut])
        project(ledger)  # made on the first part, caught up below
        ledger.append_many(events[cut:])
        _check(events, ledger)
        assert replay_portfolio(ledger) == replay_portfolio(events)  # from the projection now
        assert spent_on(ledger, DAYS[1]) == _old_spent_on(events, DAYS[1])
        assert tokens_on(ledger, DAYS[1]) == _old_tokens_on(events, DAYS[1])
        assert day_summary(ledger, DAYS[1], {}, "XNYS") == _old_day_summary(events, DAYS[1], {})


def test_a_resume_clears_the_halt_and_the_marks_but_not_the_orders() -> None:
    def event(type_: EventType, minutes: int, **payload: Any) -> Event:
        at = T0 + timedelta(hours=15, minutes=minutes)
        return Event(type=type_, run_id="r", mode=Mode.PAPER, as_of=at, recorded_at=at, payload=payload)

    s = "2024-03-04"
    events = [
        event(EventType.RECONCILIATION, 0, ok=True, equity=100.0, session=s),
        event(EventType.RECONCILIATION, 1, ok=True, equity=120.0, session=s),
        event(EventType.ORDER_SUBMITTED, 2, client_order_id="ql-1", broker_order_id="b1", session=s),
        event(EventType.INTERVENTION, 3, kind="drawdown", reason="down 20%", session=s),
        event(EventType.INTERVENTION, 4, kind="daily_loss", reason="lost", session=s),
    ]
    state = fold(events).safety(DAYS[1])
    assert (state.halted, state.daily_loss, state.session_open_equity, state.peak_equity) == ("drawdown: down 20%", "daily_loss: lost", 100.0, 120.0)
    assert state.trades_today == 1 and state.sent_orders == {"ql-1"} and state.tripped_today == {"daily_loss"}
    events += [event(EventType.INTERVENTION, 5, kind="resume", reason="by me"), event(EventType.RECONCILIATION, 6, ok=True, equity=90.0, session=s)]
    state = fold(events).safety(DAYS[1])
    assert (state.halted, state.daily_loss, state.session_open_equity, state.peak_equity, state.tripped_today) == (None, None, 90.0, 90.0, frozenset())
    assert state.trades_today == 1 and state.sent_orders == {"ql-1"}


# -- typed payloads ---------------------------------------------------------------------------------------


def test_a_bad_payload_is_refused_naming_the_type_and_the_field() -> None:
    at = T0
    good = Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.PAPER, as_of=at, recorded_at=at, payload={"amount": 10.0})
    bad = Event(
        type=EventType.FILL,
        run_id="r",
        mode=Mode.PAPER,
        as_of=at,
        recorded_at=at,
        payload={"symbol": "AAPL", "side": "buy", "quantity": "ten", "price": 10.0},
    )
    with Ledger("sqlite://") as ledger:
        with pytest.raises(LedgerError, match=r"nothing written.*invalid fill payload: quantity: .*'ten'.*event " + bad.event_id):
            ledger.append_many([good, bad])
        assert ledger.count() == 0
        no_side = bad.model_copy(update={"payload": {"symbol": "AAPL", "quantity": 1.0, "price": 10.0}})
        with pytest.raises(LedgerError, match="invalid fill payload: side: Field required"):
            ledger.emit(no_side)
        reserved = good.model_copy(update={"payload": {"amount": 1.0, "v": 9}})
        with pytest.raises(LedgerError, match="'v' is reserved"):
            ledger.emit(reserved)
        nan = Event(type=EventType.RECONCILIATION, run_id="r", mode=Mode.PAPER, recorded_at=at, payload={"ok": True, "equity": float("nan")})
        with pytest.raises(LedgerError, match="invalid reconciliation payload: equity: Input should be a finite number"):
            ledger.emit(nan)
        assert ledger.count() == 0
    with pytest.raises(PayloadError, match="invalid fill payload: quantity"):
        bad.typed()


def test_payloads_read_back_typed_with_their_version() -> None:
    fill = {"fill_id": "f1", "client_order_id": "ql-1", "symbol": "AAPL", "side": "buy", "quantity": 2.0, "price": 10.5, "commission": 0.1, "ts": "2024-03-04T15:00:00Z"}
    event = Event(type=EventType.FILL, run_id="r", mode=Mode.PAPER, as_of=T0, recorded_at=T0, payload=fill)
    with Ledger("sqlite://") as ledger:
        ledger.emit(event)
        [back] = ledger.events()
        with ledger.engine.connect() as conn:
            stored = conn.execute(sa.text("select payload from ledger_events")).scalar_one()
    assert back == event and back.v == PAYLOAD_VERSION and back.payload == fill  # "v" is not part of the payload
    assert (json.loads(stored) if isinstance(stored, str) else stored) == {**fill, "v": PAYLOAD_VERSION}
    typed = back.typed()
    assert isinstance(typed, FillPayload) and typed.quantity == 2.0 and typed.ts == datetime(2024, 3, 4, 15, tzinfo=UTC)


def _write_old_rows(ledger: Ledger, rows: Iterable[tuple[str, dict[str, Any], str | None]]) -> None:
    """Rows as the ledger wrote them before versions: the payload JSON without "v"."""
    with ledger.engine.begin() as conn:
        for i, (type_, payload, session_ts) in enumerate(rows):
            conn.execute(
                sa.text(
                    "insert into ledger_events (event_id, type, run_id, trace_id, mode, symbol, as_of, recorded_at, payload) "
                    "values (:id, :type, 'old', 't', 'paper', null, :ts, :ts, :payload)"
                ),
                {"id": f"old{i}", "type": type_, "ts": session_ts, "payload": json.dumps(payload)},
            )


def test_an_old_format_ledger_still_reads() -> None:
    ts = "2024-03-04 15:00:00.000000"
    rows = [
        ("deposit", {"amount": 1000.0}, ts),
        ("fill", {"fill_id": "f1", "client_order_id": "ql-1", "symbol": "AAPL", "side": "buy", "quantity": 2.0, "price": 10.0, "commission": 1.0, "ts": "2024-03-04T15:00:00Z"}, ts),
        ("reconciliation", {"ok": True, "equity": 999.0, "cash": 979.0, "session": "2024-03-04"}, ts),
        ("intervention", {"kind": "kill_switch", "reason": "old halt", "session": "2024-03-04"}, ts),
        ("order_submitted", {"client_order_id": "ql-1", "broker_order_id": "b1", "session": "2024-03-04"}, ts),
        ("cost", {"scope": "run", "run_cost_usd": 0.25, "model_calls": 5, "prompt_tokens": 100, "completion_tokens": 10}, ts),
        ("intervention", {}, ts),  # kind and reason missing: read as the old readers defaulted them
    ]
    with Ledger("sqlite://") as ledger:
        _write_old_rows(ledger, rows)
        events = list(ledger.events())
        assert [e.v for e in events] == [1] * len(rows) and [e.payload for e in events] == [p for _t, p, _ts in rows]
        assert [e.typed().model_dump(mode="json", exclude_unset=True) for e in events] == [p for _t, p, _ts in rows]
        state = read_state(ledger, DAYS[1])
        assert (state.halted, state.session_open_equity, state.peak_equity, state.trades_today, state.sent_orders) == ("kill_switch: old halt", 999.0, 999.0, 1, {"ql-1"})
        assert spent_on(ledger, DAYS[1]) == (0.25, [0.05]) and tokens_on(ledger, DAYS[1]) == 110
        assert replay_portfolio(ledger) == Portfolio(cash=979.0, positions={"AAPL": 2.0}, avg_cost={"AAPL": 10.0}, commissions=1.0, fills=1)
        assert day_summary(ledger, DAYS[1], {"AAPL": 11.0})["interventions"] == ["kill_switch: old halt", "None: "]
        # A new event beside the old ones: both read, each with its version.
        ledger.emit(Event(type=EventType.DEPOSIT, run_id="new", mode=Mode.PAPER, recorded_at=T0, payload={"amount": 1.0}))
        assert [e.v for e in ledger.events()][-2:] == [1, PAYLOAD_VERSION] and replay_portfolio(ledger).cash == 980.0


def test_a_payload_from_a_newer_version_is_a_clear_error() -> None:
    with Ledger("sqlite://") as ledger:
        _write_old_rows(ledger, [("deposit", {"amount": 1.0, "v": PAYLOAD_VERSION + 1}, "2024-03-04 15:00:00.000000")])
        [event] = ledger.events()
        with pytest.raises(PayloadError, match=f"deposit payload has version {PAYLOAD_VERSION + 1}, newer than"):
            event.typed()


@pytest.mark.postgres
def test_on_postgresql_a_late_commit_below_the_last_seq_read_is_not_missed(pg_schema_url: str) -> None:
    """Sequence values can commit out of order on PostgreSQL: the projection reads everything again."""

    def deposit(amount: float, minutes: int) -> Event:
        at = T0 + timedelta(minutes=minutes)
        return Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.PAPER, as_of=at, recorded_at=at, payload={"amount": amount})

    def insert(ledger: Ledger, seq: int, event: Event) -> None:  # as a slower transaction would have, with its own seq
        with ledger.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "insert into ledger_events (seq, event_id, type, run_id, trace_id, mode, as_of, recorded_at, payload) "
                    "values (:seq, :id, 'deposit', 'r', 't', 'paper', :at, :at, cast(:payload as jsonb))"
                ),
                {"seq": seq, "id": event.event_id, "at": event.as_of, "payload": json.dumps({**event.payload, "v": PAYLOAD_VERSION})},
            )

    with Ledger(pg_schema_url) as ledger:
        first = [deposit(1.0, 0), deposit(2.0, 1)]
        ledger.append_many(first)
        insert(ledger, 100, deposit(4.0, 2))
        assert project(ledger).portfolio.cash == 7.0 and project(ledger).last_seq == 100
        insert(ledger, 50, deposit(8.0, 3))  # committed after seq 100 was read
        ledger.append_many([deposit(16.0, 4)])
        projection = project(ledger)
        assert projection.portfolio.cash == 31.0 and projection.applied == 5
        assert projection.day_summary(DAYS[0], {}, NY)["events"] == {"deposit": 5}  # 22:00-22:04 New York, March 3
        assert replay_portfolio(ledger) == replay_portfolio(ledger, until_seq=10**9)


# -- snapshots across processes ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=ledgers(), split=st.floats(0, 1))
def test_a_snapshot_plus_the_tail_equals_a_full_pass(events: list[Event], split: float) -> None:
    """Stored as JSON at any point and read back, then fed the rest: the same state as one pass."""
    from trading.ledger.projections import from_json, to_json

    cut = int(len(events) * split)
    restored = from_json(to_json(fold(events[:cut])))
    assert restored == fold(events[:cut])
    assert fold(events[cut:], restored) == fold(events)


def _spy_reads(ledger: Ledger) -> list[int]:
    """The `after_seq` of every projection read of `ledger` (where each pass started)."""
    starts: list[int] = []
    rows = ledger.rows

    def spied(*, after_seq: int = 0, **kwargs: Any) -> Any:
        starts.append(after_seq)
        return rows(after_seq=after_seq, **kwargs)

    ledger.rows = spied  # type: ignore[method-assign]
    return starts


def test_a_new_process_starts_from_the_stored_snapshot_and_a_code_change_ignores_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trading.ledger.projections as projections

    monkeypatch.setattr(projections, "SNAPSHOT_EVERY", 10)
    at = T0 + timedelta(minutes=5)
    made = [
        Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.SIMULATION, payload={"amount": 1000.0}, as_of=at),
        *(
            Event(type=EventType.FILL, run_id="r", mode=Mode.SIMULATION, as_of=at + timedelta(minutes=i),
                  payload={"fill_id": f"f{i}", "symbol": SYMBOLS[i % 2], "side": "buy" if i % 3 else "sell", "quantity": 1 + i % 4, "price": 100.0 + i, "commission": 0.5})
            for i in range(30)
        ),
        Event(type=EventType.INTERVENTION, run_id="r", mode=Mode.SIMULATION, payload={"kind": "kill_switch", "reason": "test"}, as_of=at),
    ]  # fmt: skip
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as first:
        first.append_many(made[:20])
        project(first)  # 20 events folded: saved (every 10 here)
        snapshot = first.load_snapshot(projections.SNAPSHOT_NAME)
        assert snapshot is not None and (snapshot.last_seq, snapshot.applied, snapshot.version) == (20, 20, projections.CODE_VERSION)
        first.append_many(made[20:])
    with Ledger(url) as second:  # another process: a new Ledger, nothing cached
        starts = _spy_reads(second)
        assert project(second) == fold(made)
        assert starts == [20]  # only the tail was read
        assert second.load_snapshot(projections.SNAPSHOT_NAME).last_seq == len(made)  # type: ignore[union-attr]
    monkeypatch.setattr(projections, "CODE_VERSION", "another-fold")
    with Ledger(url) as third:  # the fold's code changed: its snapshot is not read, then replaced
        starts = _spy_reads(third)
        assert project(third) == fold(made)
        assert starts == [0]
        assert third.load_snapshot(projections.SNAPSHOT_NAME).version == "another-fold"  # type: ignore[union-attr]
    # an older snapshot of the same version never replaces a newer one (two processes racing)
    with Ledger(url) as fourth:
        stale = projections.Snapshot(projections.SNAPSHOT_NAME, "another-fold", 5, 5, projections.to_json(fold(made[:5])))
        fourth.save_snapshot(stale)
        assert fourth.load_snapshot(projections.SNAPSHOT_NAME).last_seq == len(made)  # type: ignore[union-attr]
