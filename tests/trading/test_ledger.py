"""The ledger: append-only event store (SQLite and PostgreSQL) and the portfolio replayed from it."""

from __future__ import annotations

import math
import threading
import traceback
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from trading.brokers.base import Fill
from trading.events import Event, EventType, FanOutSink, MemorySink
from trading.ledger import Ledger, LedgerError, Portfolio, replay_portfolio
from trading.ledger.store import MIGRATIONS_DIR, REPO_ROOT, VERSION_TABLE, default_url, metadata
from trading.models import Mode, Side

T0 = datetime(2024, 3, 1, 14, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger' / 'events.sqlite'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as opened:
        yield opened


def fill_event(
    symbol: str,
    side: Side,
    qty: float,
    price: float,
    commission: float = 0.0,
    *,
    run_id: str = "run-1",
    at: datetime = T0,
) -> Event:
    fill = Fill(
        fill_id=uuid.uuid4().hex,
        client_order_id=f"ql-{uuid.uuid4().hex}",
        symbol=symbol,
        side=side,
        quantity=qty,
        price=price,
        commission=commission,
        ts=at,
    )
    return Event(
        type=EventType.FILL,
        run_id=run_id,
        mode=Mode.SIMULATION,
        symbol=symbol,
        as_of=at,
        payload=fill.model_dump(mode="json"),
    )


def deposit_event(amount: float, *, run_id: str = "run-1") -> Event:
    return Event(type=EventType.DEPOSIT, run_id=run_id, mode=Mode.SIMULATION, payload={"amount": amount})


def mixed_events() -> list[Event]:
    eastern = timezone(timedelta(hours=-5))
    return [
        deposit_event(100_000.0),
        Event(
            type=EventType.DECISION,
            run_id="run-1",
            mode=Mode.PAPER,
            symbol="AAPL",
            as_of=datetime(2024, 3, 1, 9, 30, 0, 1, tzinfo=eastern),  # not UTC: same instant back, in UTC
            recorded_at=datetime(2024, 3, 1, 14, 30, 5, 999999, tzinfo=UTC),
            payload={
                "verdict": "EXECUTE",
                "levels": [1.5, 2, None],
                "ok": True,
                "note": "naïve → ünïcode",
                "nested": {"a": {"b": []}},
            },
        ),
        fill_event("AAPL", Side.BUY, 10, 187.25, 0.35),
        Event(type=EventType.COST, run_id="run-2", mode=Mode.LIVE, payload={"usd": 0.0012, "tokens": 2**40}),
        Event(
            type=EventType.INTERVENTION, run_id="run-2", mode=Mode.VALIDATION, payload={}, trace_id="t" * 64
        ),
    ]


# -- the store ----------------------------------------------------------------------------------------


def test_round_trip_equals_the_emitted_events(ledger: Ledger) -> None:
    events = mixed_events()
    assert ledger.append_many(events) == len(events)
    back = list(ledger.events())
    assert back == events
    for original, read in zip(events, back, strict=True):
        assert read.model_dump() == original.model_dump()
        assert read.recorded_at.tzinfo is not None and read.recorded_at.utcoffset() == timedelta(0)
        assert read.recorded_at == original.recorded_at  # microseconds kept
        if original.as_of is not None:
            assert read.as_of is not None and read.as_of.utcoffset() == timedelta(0)
            assert read.as_of == original.as_of
    assert back[1].payload["note"] == "naïve → ünïcode" and back[3].payload["tokens"] == 2**40
    assert ledger.count() == len(events)
    seqs = [seq for seq, _ in ledger.events_with_seq()]
    assert seqs == sorted(seqs) and ledger.last_seq() == seqs[-1]


def test_text_with_tabs_newlines_backslashes_and_quotes_round_trips(ledger: Ledger) -> None:
    """What COPY's text format escapes (PostgreSQL's batch path) comes back as written, in order."""
    tricky = ["tab\there", "line\nbreak\r\n", "back\\slash \\N \\t", 'quote " and \'', "\\", "naïve – 東京 🚀", "\\.", ""]
    events = [
        Event(type=EventType.DECISION, run_id=f"run\t{i}", mode=Mode.SIMULATION, symbol=text or None, as_of=T0 if i % 2 else None,
              recorded_at=T0 + timedelta(microseconds=i), payload={"rationale": text, "nested": {"k\n": [text, None, 1.5]}})
        for i, text in enumerate(tricky)
    ]  # fmt: skip
    assert ledger.append_many(events) == len(events)
    assert list(ledger.events()) == events


def test_emit_makes_the_ledger_an_event_sink(ledger: Ledger) -> None:
    memory = MemorySink()
    sink = FanOutSink([ledger, memory])
    for event in mixed_events():
        sink.emit(event)
    assert list(ledger.events()) == memory.events


def test_re_appending_the_same_events_writes_nothing(ledger: Ledger) -> None:
    events = mixed_events()
    assert ledger.append_many(events) == len(events)
    assert ledger.append_many(events) == 0
    assert ledger.append_many(events[:2] + [deposit_event(1.0)] + events[:2]) == 1  # only the new one
    ledger.emit(events[0])  # no error either
    assert ledger.count() == len(events) + 1
    assert list(ledger.events())[: len(events)] == events


def test_duplicates_within_one_call_are_written_once(ledger: Ledger) -> None:
    event = deposit_event(5.0)
    assert ledger.append_many([event, event, event], batch=2) == 1
    assert ledger.count() == 1


def test_the_table_is_append_only(ledger: Ledger) -> None:
    events = mixed_events()
    ledger.append_many(events)
    statements = ["update ledger_events set run_id = 'tampered'", "delete from ledger_events"]
    if ledger.dialect == "postgresql":
        statements.append("truncate ledger_events")
    for statement in statements:
        with pytest.raises(sa.exc.DBAPIError, match="ledger_events is append-only"):
            with ledger.engine.begin() as conn:
                conn.execute(sa.text(statement))
    assert list(ledger.events()) == events
    assert not any(hasattr(ledger, name) for name in ("update", "delete", "remove", "truncate"))


def test_migrate_twice_is_a_no_op(ledger: Ledger, ledger_url: str) -> None:
    events = mixed_events()
    ledger.append_many(events)
    ledger.migrate()
    ledger.migrate()
    with Ledger(ledger_url) as again:  # opening an existing ledger migrates (nothing) and keeps it
        assert list(again.events()) == events
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.text(f"select version_num from {VERSION_TABLE}")).scalars().all() == ["0002"]
        tables = set(sa.inspect(conn).get_table_names())
    assert {"ledger_events", VERSION_TABLE} <= tables and "alembic_version" not in tables  # Dagster's name


def test_schema_from_the_migrations_matches_the_store_table(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert [
        d
        for d in diff
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == VERSION_TABLE)
    ] == []


def test_downgrade_removes_everything_and_upgrade_restores_it(ledger: Ledger) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    with ledger.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    with ledger.engine.connect() as conn:
        assert "ledger_events" not in sa.inspect(conn).get_table_names()
    ledger.migrate()
    ledger.append_many(mixed_events())
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("delete from ledger_events"))


def test_events_filtered_by_run_type_symbol_and_seq(ledger: Ledger) -> None:
    events = [
        fill_event("AAPL", Side.BUY, 1, 10.0, run_id="a"),
        fill_event("MSFT", Side.BUY, 1, 10.0, run_id="a"),
        deposit_event(100.0, run_id="b"),
        fill_event("AAPL", Side.SELL, 1, 11.0, run_id="b"),
        Event(type=EventType.DECISION, run_id="a", mode=Mode.SIMULATION, symbol="AAPL"),
    ]
    ledger.append_many(events)
    assert list(ledger.events(run_id="a")) == [events[0], events[1], events[4]]
    assert list(ledger.events(types=EventType.FILL)) == [events[0], events[1], events[3]]
    assert list(ledger.events(types=["deposit", EventType.DECISION])) == [events[2], events[4]]
    assert list(ledger.events(symbol="AAPL")) == [events[0], events[3], events[4]]
    assert list(ledger.events(run_id="a", types=[EventType.FILL], symbol="AAPL")) == [events[0]]
    seqs = [seq for seq, _ in ledger.events_with_seq()]
    assert list(ledger.events(after_seq=seqs[2])) == events[3:]
    assert list(ledger.events(after_seq=seqs[-1])) == []
    assert list(ledger.events(batch=2)) == events  # several pages
    assert list(ledger.events(types=[])) == []
    with pytest.raises(ValueError):
        list(ledger.events(types=["no-such-type"]))


def test_a_failing_batch_writes_nothing(ledger: Ledger) -> None:
    first = deposit_event(1.0)
    ledger.append_many([first])
    good = [deposit_event(float(i)) for i in range(5)]
    unserialisable = Event(
        type=EventType.COST, run_id="run-1", mode=Mode.SIMULATION, payload={"usd": object()}
    )
    with pytest.raises(LedgerError, match="nothing written"):
        ledger.append_many([*good, unserialisable], batch=2)  # fails in the third executemany
    nan = Event(type=EventType.COST, run_id="run-1", mode=Mode.SIMULATION, payload={"usd": math.nan})
    with pytest.raises(LedgerError):
        ledger.append_many([*good, nan], batch=2)
    too_long_id = deposit_event(1.0).model_copy(update={"event_id": "x" * 33})
    with pytest.raises(LedgerError, match="longer than 32"):
        ledger.append_many([*good, too_long_id], batch=2)

    def dies_midway() -> Iterator[Event]:
        yield from good
        raise RuntimeError("producer crashed")

    with pytest.raises(LedgerError) as info:
        ledger.append_many(dies_midway(), batch=2)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert list(ledger.events()) == [first]
    assert ledger.append_many(good) == len(good)  # the ledger is fine afterwards


def test_concurrent_writers(ledger_url: str) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            with Ledger(ledger_url) as mine:
                for _ in range(5):
                    mine.append_many([deposit_event(1.0, run_id=f"w{worker}") for _ in range(40)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    Ledger(ledger_url).close()  # migrated once before the race
    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with Ledger(ledger_url) as ledger:
        assert ledger.count() == 4 * 5 * 40
        assert replay_portfolio(ledger).cash == 800.0
        assert replay_portfolio(ledger, run_id="w2").cash == 200.0


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}") as ledger, ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL


def test_default_path_and_a_path_passed_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger reads no environment: the path comes from orchestration (QUANTLAKE_LEDGER_PATH there)."""
    path = tmp_path / "deep" / "er" / "ledger.sqlite"
    monkeypatch.setenv("QUANTLAKE_LEDGER_PATH", str(tmp_path / "not-read-here.sqlite"))
    assert default_url() == f"sqlite:///{REPO_ROOT / 'data' / 'ledger.sqlite'}"
    with Ledger(default_url(path)) as ledger:
        ledger.emit(deposit_event(3.0))
        assert ledger.url == f"sqlite:///{path}"
    assert path.exists() and not (tmp_path / "not-read-here.sqlite").exists()


def test_the_ledger_path_setting_reaches_the_trading_resource(tmp_path: Path) -> None:
    from orchestration.resources import trading_resource
    from orchestration.settings import Settings

    path = tmp_path / "ledger.sqlite"
    trading = trading_resource(Settings.model_validate({"QUANTLAKE_LEDGER_PATH": str(path)}))
    assert trading.ledger_url == f"sqlite:///{path}"
    with trading.ledger() as ledger:
        assert ledger.url == f"sqlite:///{path}"
    url = "sqlite:///" + str(tmp_path / "by-url.sqlite")  # the URL wins over the path
    assert trading_resource(Settings.model_validate({"QUANTLAKE_LEDGER_PATH": str(path), "QUANTLAKE_LEDGER_URL": url})).ledger_url == url


def test_in_memory_sqlite_keeps_its_events() -> None:
    with Ledger("sqlite://") as ledger:
        ledger.append_many(mixed_events())
        assert ledger.count() == len(mixed_events())


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://quant:s3cret-pw@127.0.0.1:1/ledger",  # nothing listens on port 1
        "postgresql://quant:s3cret-pw@127.0.0.1:notaport/ledger",
        "mysql://quant:s3cret-pw@127.0.0.1/ledger",
        "nonsense://quant:s3cret-pw@@/:",
    ],
)
def test_a_bad_url_is_a_clear_error_without_the_password(url: str) -> None:
    with pytest.raises(LedgerError) as info:
        Ledger(url)
    message = str(info.value)
    assert "ledger" in message and "quant:***@" in message and "s3cret-pw" not in message
    assert "s3cret-pw" not in "".join(traceback.format_exception(info.value))  # nor in a printed traceback


def test_an_unusable_sqlite_path_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="/proc/no-such-dir"):
        Ledger("sqlite:////proc/no-such-dir/ledger.sqlite")


# -- the portfolio ------------------------------------------------------------------------------------


def test_average_cost_accounting_by_hand() -> None:
    p = Portfolio()
    p.apply_deposit(10_000.0)
    p.apply_fill("X", 10, 100.0, 1.0)
    p.apply_fill("X", 10, 110.0, 1.0)
    assert p.positions == {"X": 20} and p.avg_cost == {"X": 105.0} and p.realized_pnl == 0.0
    p.apply_fill("X", -15, 120.0, 1.0)
    assert p.positions == {"X": 5} and p.avg_cost == {"X": 105.0} and p.realized_pnl == 225.0
    p.apply_fill("X", -10, 100.0, 1.0)  # through zero: closes 5 at a loss of 5 each, opens 5 short at 100
    assert p.positions == {"X": -5} and p.avg_cost == {"X": 100.0} and p.realized_pnl == 200.0
    assert p.commissions == 4.0 and p.fills == 4
    assert p.cash == 10_000.0 - (1_000.0 + 1_100.0 - 1_800.0 - 1_000.0) - 4.0  # 10,696
    assert p.unrealized_pnl({"X": 90.0}) == 50.0  # short 5 from 100, now 90
    assert p.equity({"X": 90.0}) == 10_696.0 - 450.0
    assert p.equity({"X": 90.0}) == 10_000.0 + p.realized_pnl + p.unrealized_pnl({"X": 90.0}) - p.commissions
    assert p.equity({}) == 10_696.0 - 500.0  # no mark: valued at average cost
    p.apply_fill("X", 5, 95.0)  # covers the short exactly: +25
    assert p.positions == {} and p.avg_cost == {} and p.realized_pnl == 225.0
    assert p.snapshot({"X": 1.0}) == {
        "cash": p.cash,
        "positions": {},
        "avg_cost": {},
        "realized_pnl": 225.0,
        "commissions": 4.0,
        "fills": 5,
        "unrealized_pnl": 0.0,
        "equity": p.cash,
    }
    with pytest.raises(ValueError):
        p.apply_fill("X", 0, 1.0)


def test_short_side_accounting() -> None:
    p = Portfolio()
    p.apply_fill("Y", -10, 50.0)
    p.apply_fill("Y", -10, 40.0)
    assert p.positions == {"Y": -20} and p.avg_cost == {"Y": 45.0}
    p.apply_fill("Y", 5, 30.0)  # covering 5 at 30 from 45: +75
    assert p.realized_pnl == 75.0 and p.positions == {"Y": -15} and p.avg_cost == {"Y": 45.0}
    p.apply_fill("Y", 25, 60.0)  # covers 15 at a loss of 15 each, opens 10 long at 60
    assert p.realized_pnl == 75.0 - 225.0 and p.positions == {"Y": 10} and p.avg_cost == {"Y": 60.0}
    assert p.cash == 500.0 + 400.0 - 150.0 - 1_500.0


def test_replay_from_the_ledger(ledger: Ledger) -> None:
    events = [
        deposit_event(10_000.0),
        fill_event("X", Side.BUY, 10, 100.0, 1.0),
        Event(
            type=EventType.DECISION, run_id="run-1", mode=Mode.SIMULATION, payload={"amount": 1e9}
        ),  # ignored
        fill_event("X", Side.BUY, 10, 110.0, 1.0),
        fill_event("X", Side.SELL, 15, 120.0, 1.0),
        fill_event("X", Side.SELL, 10, 100.0, 1.0),
        deposit_event(500.0, run_id="other"),
    ]
    ledger.append_many(events)
    replayed = replay_portfolio(ledger)
    assert replayed == replay_portfolio(events)
    assert (
        replayed.positions == {"X": -5}
        and replayed.realized_pnl == 200.0
        and replayed.cash == 10_696.0 + 500.0
    )
    seqs = [seq for seq, _ in ledger.events_with_seq()]
    halfway = replay_portfolio(ledger, until_seq=seqs[3])
    assert halfway.positions == {"X": 20} and halfway.avg_cost == {"X": 105.0} and halfway.fills == 2
    assert replay_portfolio(ledger, run_id="other") == Portfolio(cash=500.0)
    assert replay_portfolio(ledger, until_seq=0) == Portfolio()
    with pytest.raises(ValueError):
        replay_portfolio(events, until_seq=3)


fills_strategy = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "CCC"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.one_of(
            st.integers(1, 500).map(float), st.floats(0.001, 1_000, allow_nan=False, allow_infinity=False)
        ),
        st.floats(0.01, 5_000, allow_nan=False, allow_infinity=False),
        st.one_of(st.just(0.0), st.floats(0, 25, allow_nan=False, allow_infinity=False)),
    ),
    max_size=60,
)


@seed(20240301)
@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    deposits=st.lists(st.floats(1, 1e6, allow_nan=False, allow_infinity=False), max_size=3),
    fills=fills_strategy,
)
def test_replay_equals_direct_application(
    ledger: Ledger, deposits: list[float], fills: list[tuple[str, Side, float, float, float]]
) -> None:
    run_id = uuid.uuid4().hex  # one ledger for all examples; each example replays its own run
    events = [deposit_event(amount, run_id=run_id) for amount in deposits]
    direct = Portfolio()
    for amount in deposits:
        direct.apply_deposit(amount)
    for symbol, side, qty, price, commission in fills:
        event = fill_event(symbol, side, qty, price, commission, run_id=run_id)
        events.append(event)
        direct.apply_fill(symbol, qty if side == Side.BUY else -qty, price, commission)
    assert ledger.append_many(events) == len(events)

    replayed = replay_portfolio(ledger, run_id=run_id)
    assert replayed == direct  # exactly: floats survive the JSON round trip
    assert replay_portfolio(events) == direct

    def signed(side: Side, qty: float) -> float:
        return qty if side == Side.BUY else -qty

    scale = sum(abs(q * p) for _, _, q, p, _ in fills) + sum(deposits) + 1.0
    expected_cash = (
        sum(deposits) - sum(signed(s, q) * p for _, s, q, p, _ in fills) - sum(c for *_, c in fills)
    )
    assert math.isclose(replayed.cash, expected_cash, rel_tol=1e-9, abs_tol=1e-9 * scale)
    assert math.isclose(replayed.commissions, sum(c for *_, c in fills), abs_tol=1e-9 * scale)
    assert replayed.fills == len(fills)
    for symbol in ("AAA", "BBB", "CCC"):
        total = sum(signed(s, q) for sym, s, q, _, _ in fills if sym == symbol)
        volume = sum(q for sym, _, q, _, _ in fills if sym == symbol) + 1.0
        assert math.isclose(replayed.positions.get(symbol, 0.0), total, abs_tol=1e-9 * volume)
    # The accounting identity: equity = deposits + realized + unrealized - commissions, at any marks.
    marks: dict[str, Any] = {"AAA": 10.0, "BBB": 2_000.0}  # CCC unmarked: valued at its average cost
    identity = sum(deposits) + replayed.realized_pnl + replayed.unrealized_pnl(marks) - replayed.commissions
    assert math.isclose(replayed.equity(marks), identity, rel_tol=1e-9, abs_tol=1e-7 * scale)
