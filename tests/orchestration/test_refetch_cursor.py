"""missed_sessions_sensor keeps, per symbol, the last session confirmed complete in its cursor and
does not query those sessions again; what it asks for is the same as without the cursor's memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import time_machine

from orchestration.sensors import missed_sessions_sensor

NY = ZoneInfo("America/New_York")
MON, TUE, WED = "2026-11-23", "2026-11-24", "2026-11-25"
STARTED = datetime(2026, 11, 23, 9, 0, tzinfo=NY)


@pytest.fixture
def instance(monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,MSFT")
    for name in ("QUANTLAKE_REFETCH_SESSIONS", "QUANTLAKE_REFETCH_GRACE_MIN", "QUANTLAKE_REFETCH_BACKOFF_MIN", "QUANTLAKE_REFETCH_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("symbols", ["AAPL", "MSFT", "NVDA"])
        yield inst


def _materialized(instance: dg.DagsterInstance, day: str, symbol: str, until: str = "20:59") -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization("bars_1m", partition=f"{day}|{symbol}", metadata={"last_ts": f"{day} {until}:00+00:00", "quarantined_rows": 0})
    )


def _evaluate(instance: dg.DagsterInstance, at: datetime, cursor: str, queries: list[Any]) -> tuple[list[tuple[str, str]], str | None]:
    """(run key, partition) of what the sensor asks for at `at`, and its cursor after."""
    with time_machine.travel(at, tick=False):
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        queries.clear()
        result = missed_sessions_sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], context.cursor
    assert isinstance(result, dg.SensorResult)
    requests = list(result.run_requests or [])
    return [(r.run_key or "", str(r.partition_key)) for r in requests], context.cursor


@pytest.fixture
def queries(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The materialization queries the sensor makes, by partition."""
    seen: list[Any] = []
    fetch = instance.fetch_materializations

    def counted(records_filter: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(records_filter.asset_partitions)
        return fetch(records_filter, *args, **kwargs)

    monkeypatch.setattr(instance, "fetch_materializations", counted)
    return seen


def test_confirmed_sessions_are_not_queried_again_and_the_requests_stay(instance: dg.DagsterInstance, queries: list[Any]) -> None:
    # Monday complete; Tuesday: AAPL complete, MSFT only to 15:00 (its close's ingest failed); Wednesday complete.
    for symbol in ("AAPL", "MSFT"):
        _materialized(instance, MON, symbol)
        _materialized(instance, WED, symbol)
    _materialized(instance, TUE, "AAPL")
    _materialized(instance, TUE, "MSFT", until="20:00")
    at = datetime(2026, 11, 26, 9, 35, tzinfo=NY)  # Thanksgiving: Monday to Wednesday have closed

    first, cursor = _evaluate(instance, at, STARTED.isoformat(), queries)
    assert first == [(f"refetch|{TUE}|MSFT|1", f"{TUE}|MSFT")]
    assert len(queries) == 6  # three sessions x two symbols
    assert cursor is not None
    state = json.loads(cursor)
    # MSFT's Wednesday is complete, but its Tuesday is not: only what has nothing missing before it.
    assert state == {"since": STARTED.isoformat(), "confirmed": {"AAPL": WED, "MSFT": MON}}

    again, cursor_again = _evaluate(instance, at.replace(minute=40), cursor, queries)
    assert again == first
    assert queries == [[f"{TUE}|MSFT"], [f"{WED}|MSFT"]]  # Tuesday and Wednesday of MSFT only
    assert cursor_again == cursor

    # Tuesday refetched: MSFT is confirmed through Wednesday; then nothing is queried at all.
    _materialized(instance, TUE, "MSFT")
    assert _evaluate(instance, at.replace(minute=45), cursor, queries)[0] == []
    _, cursor = _evaluate(instance, at.replace(minute=45), cursor, queries)
    assert json.loads(cursor or "")["confirmed"] == {"AAPL": WED, "MSFT": WED}
    assert _evaluate(instance, at.replace(minute=50), cursor or "", queries)[0] == [] and queries == []


def test_a_symbol_added_to_the_universe_is_checked_on_the_sessions_confirmed_for_the_others(
    instance: dg.DagsterInstance, queries: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for symbol in ("AAPL", "MSFT"):
        _materialized(instance, MON, symbol)
    at = datetime(2026, 11, 24, 9, 35, tzinfo=NY)
    _, cursor = _evaluate(instance, at, STARTED.isoformat(), queries)
    assert json.loads(cursor or "")["confirmed"] == {"AAPL": MON, "MSFT": MON}
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,MSFT,NVDA")
    requests, _ = _evaluate(instance, at.replace(minute=40), cursor or "", queries)
    assert requests == [(f"refetch|{MON}|NVDA|1", f"{MON}|NVDA")]
    assert queries == [[f"{MON}|NVDA"]]
