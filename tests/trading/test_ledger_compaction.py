"""Ledger compaction: archived, snapshotted old events leave the live table, and every replay stays.

A half year of trading events (deposits, marks, orders sent, fills, a drawdown trip and its resume,
a kill switch still active at the end, model costs, decisions) on SQLite and PostgreSQL: the
projection (portfolio, halt state, peak, sent orders, spend, day summaries) after compaction equals
the one before, read from the snapshot in a new process, from the archive when the code changed (a
snapshot of another version), and by a process that had folded part of the ledger before compaction
and catches up after it; the archive holds every removed event; nothing unarchived is removed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from trading.events import Event, EventType
from trading.ledger import Ledger, LedgerError, project, projections
from trading.ledger.archive import (
    ArchiveError,
    archive_events,
    archived_files,
    restore_events,
    verify_archive,
)
from trading.ledger.compaction import compact_ledger, compacted
from trading.models import Mode

START = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)  # a Monday
WEEKS = 26
ARCHIVE_BEFORE = START + timedelta(weeks=20)
COMPACT_BEFORE = START + timedelta(weeks=16)


def _events() -> list[Event]:
    out: list[Event] = []

    def add(type_: EventType, at: datetime, **payload: Any) -> None:
        stamp = at + timedelta(minutes=len(out) % 50)
        out.append(Event(type=type_, run_id=f"run-{at:%Y%m%d}", mode=Mode.PAPER, symbol=payload.get("symbol"), as_of=stamp, recorded_at=stamp + timedelta(seconds=3), payload=payload))

    add(EventType.DEPOSIT, START - timedelta(days=1), amount=100_000.0)
    equity = 100_000.0
    for week in range(WEEKS):
        for day in range(5):
            at = START + timedelta(weeks=week, days=day)
            session = at.date().isoformat()
            equity *= 1.002 if (week * 5 + day) % 7 else 0.97
            add(EventType.RECONCILIATION, at, session=session, ok=True, equity=round(equity, 2), cash=50_000.0)
            add(EventType.DECISION, at, verdict="EXECUTE" if day % 2 else "HOLD", symbol="AAPL", rationale=f"week {week} day {day}", side="buy", quantity=5.0, entry=100.0 + week, stop=95.0)
            coid = f"ql-{week}-{day}"
            add(EventType.ORDER_SUBMITTED, at, client_order_id=coid, broker_order_id=f"b-{week}-{day}", session=session)
            side = "buy" if (week + day) % 3 else "sell"
            add(EventType.FILL, at, fill_id=f"f-{week}-{day}", client_order_id=coid, symbol="MSFT" if day == 4 else "AAPL", side=side, quantity=float(3 + day), price=100.0 + week + day / 10, commission=0.35, ts=at.isoformat())
            add(EventType.COST, at, scope="run", run_cost_usd=0.0125 * (day + 1), model_calls=day + 1, prompt_tokens=900, completion_tokens=120)
        if week == 6:
            add(EventType.INTERVENTION, START + timedelta(weeks=week, days=2, hours=2), kind="drawdown", reason="down 3 %", session=(START + timedelta(weeks=week, days=2)).date().isoformat())
        if week == 9:
            add(EventType.INTERVENTION, START + timedelta(weeks=week, hours=1), kind="resume", reason="by me")
        if week == 12:  # a kill switch before the horizon, still in force at the end
            add(EventType.INTERVENTION, START + timedelta(weeks=week, days=3, hours=3), kind="kill_switch", reason="mid-year drill", session=(START + timedelta(weeks=week, days=3)).date().isoformat())
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "lake" / "archive" / "ledger"


def _state(url: str) -> dict[str, Any]:
    """The projection a new process reads (a fresh Ledger object), as plain data."""
    with Ledger(url) as ledger:
        return json.loads(projections.to_json(project(ledger)))  # type: ignore[no-any-return]


@pytest.fixture
def written(url: str, folder: Path) -> Iterator[list[Event]]:
    events = _events()
    with Ledger(url) as ledger:
        ledger.append_many(events)
        archive_events(ledger, folder, ARCHIVE_BEFORE, max_events=100)  # several files
    yield events


def test_replay_after_compaction_equals_replay_before(url: str, folder: Path, written: list[Event], monkeypatch: pytest.MonkeyPatch) -> None:
    before = _state(url)
    assert before["halted"] == "kill_switch: mid-year drill" and len(before["sent_orders"]) == WEEKS * 5
    with Ledger(url) as ledger:
        n = ledger.count()
        result = compact_ledger(ledger, folder, COMPACT_BEFORE)
        assert result.removed > 300 and ledger.count() == n - result.removed
        assert all(e.recorded_at >= COMPACT_BEFORE - timedelta(weeks=1) for e in ledger.events())  # the old ones are gone
        assert compacted(ledger).up_to_seq == result.up_to_seq == min(s for s, _ in ledger.events_with_seq()) - 1

    # From the snapshot, as a new process reads it.
    assert _state(url) == before
    # A process whose fold stopped below what compaction removed rebuilds instead of skipping events.
    with Ledger(url) as early:
        stale = projections.Projection()
        stale.apply_rows(r for r in _rows_of(written, result.up_to_seq - 50))
        projections._CACHE[early] = stale
        assert json.loads(projections.to_json(project(early))) == before
    # New code (a snapshot of another version is ignored): the fold starts from the archive.
    monkeypatch.setattr(projections, "CODE_VERSION", "another-fold")
    assert _state(url) == before

    # The archive holds every removed event, field for field; the live table is append-only again.
    removed_ids = {e.event_id for e in written} - _live_ids(url)
    archived = {e.event_id: e for e in restore_events(folder)}
    assert len(removed_ids) == result.removed and removed_ids <= set(archived)
    assert [archived[e.event_id] for e in written if e.event_id in removed_ids] == [e for e in written if e.event_id in removed_ids]
    assert verify_archive(folder) >= result.removed
    with Ledger(url) as ledger, pytest.raises(sa.exc.DatabaseError), ledger.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_events"))


def _rows_of(events: list[Event], upto: int) -> Iterator[tuple[int, str, str | None, str | None, dict[str, Any] | None, int]]:
    for seq, e in enumerate(events[:upto], start=1):
        yield seq, e.type.value, projections._minute(e.as_of or e.recorded_at), projections._minute(e.as_of) if e.type == EventType.COST else None, dict(e.payload), e.v


def _live_ids(url: str) -> set[str]:
    with Ledger(url) as ledger:
        return {e.event_id for e in ledger.events()}


def test_new_events_after_compaction_and_a_second_pass(url: str, folder: Path, written: list[Event]) -> None:
    with Ledger(url) as ledger:
        first = compact_ledger(ledger, folder, COMPACT_BEFORE)
        assert compact_ledger(ledger, folder, COMPACT_BEFORE).removed == 0  # a rerun removes nothing more
        late = Event(type=EventType.DEPOSIT, run_id="late", mode=Mode.PAPER, payload={"amount": 5.0}, recorded_at=START + timedelta(weeks=27))
        ledger.append_many([late])
        archive_events(ledger, folder, START + timedelta(weeks=30), max_events=100)
        second = compact_ledger(ledger, folder, START + timedelta(weeks=30))
        assert second.removed > 0 and second.total_removed == first.removed + second.removed
        # Whole archive files go, but never the one holding the newest event (SQLite would reuse its seq).
        [*_, (first_kept, newest, _path)] = archived_files(folder)
        left = list(ledger.events_with_seq())
        assert second.up_to_seq == first_kept - 1 and [s for s, _ in left] == list(range(first_kept, newest + 1))
        assert left[-1] == (len(written) + 1, late)
    events = [*written, late]
    assert _state(url)["portfolio"] == json.loads(projections.to_json(projections.fold(events)))["portfolio"]
    assert [e.event_id for e in restore_events(folder)] == [e.event_id for e in events]


def test_nothing_unarchived_or_unverified_is_removed(url: str, folder: Path, written: list[Event], tmp_path: Path) -> None:
    with Ledger(url) as ledger:
        n = ledger.count()
        # Past the archive's horizon, only what the archive holds goes: the rest stays.
        result = compact_ledger(ledger, folder, START + timedelta(weeks=40))
        archived = verify_archive(folder)
        assert result.removed == archived and ledger.count() == n - archived
        assert min(s for s, _ in ledger.events_with_seq()) == result.up_to_seq + 1
    # An archive file that is not the ledger's rows (another ledger's, tampered): nothing removed.
    other = tmp_path / "other"
    with Ledger(f"sqlite:///{tmp_path / 'other.sqlite'}") as decoy:
        shifted = [e.model_copy(update={"payload": {**e.payload, "amount": 1.0}}) if e.type == EventType.DEPOSIT else e for e in _events()]
        decoy.append_many(shifted)
        archive_events(decoy, other, ARCHIVE_BEFORE, max_events=100)
    url2 = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    with Ledger(url2) as fresh:
        fresh.append_many(_events())
        with pytest.raises(ArchiveError, match="differ from the archived events"):
            compact_ledger(fresh, other, COMPACT_BEFORE)
        assert fresh.count() == len(written)


def test_a_compacted_ledger_without_its_archive_fails_closed(url: str, folder: Path, written: list[Event], monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger(url) as ledger:
        compact_ledger(ledger, folder, COMPACT_BEFORE)
    shutil.rmtree(folder)
    assert _state(url)["halted"]  # the snapshot still serves this code version
    monkeypatch.setattr(projections, "CODE_VERSION", "another-fold")
    with pytest.raises(LedgerError, match="restore that folder"):
        _state(url)


def test_a_compacted_ledger_missing_one_archive_file_fails_closed(url: str, folder: Path, written: list[Event], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file gone from the middle leaves no overlap for `verify_archive` to see (seqs may skip on
    PostgreSQL), but the archive then holds fewer events than compaction removed: no fold from it."""
    with Ledger(url) as ledger:
        result = compact_ledger(ledger, folder, COMPACT_BEFORE)
    removed_files = [path for _first, last, path in archived_files(folder) if last <= result.up_to_seq]
    assert len(removed_files) > 2
    removed_files[1].unlink()  # type: ignore[call-arg]
    assert verify_archive(folder) > 0  # what is left is whole
    monkeypatch.setattr(projections, "CODE_VERSION", "another-fold")
    with pytest.raises(LedgerError, match=f"{result.removed} events up to seq {result.up_to_seq} .* holds {result.removed - 100} of them: restore that folder"):
        _state(url)
