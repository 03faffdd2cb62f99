"""The call-count trigger of the answer-format re-check adds up across processes (issue 17).

A scheduled decision cycle is a process of its own: the calls made in a lesser format are counted
from the ledger every cycle reads, not by one process's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lake.store import replace_partitions
from strategies.builtin import SMA_CROSS
from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.conftest import PARAMS, Market, good_answers
from tests.trading.format_recheck_cycle import pipeline
from trading.agents.llm import FORMAT_MEMORY, FormatMemory
from trading.cycle import run_decision_cycle
from trading.events import Event, EventType
from trading.ledger import Ledger
from trading.pipeline import PipelineConfig


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("QL_TEST_KEY", "sk-test-123")
    FORMAT_MEMORY.forget()
    yield
    FORMAT_MEMORY.forget()


def any_format_answers(body: dict[str, Any]) -> Reply:
    """`good_answers` whatever format was asked (JSON mode names the schema in the system prompt)."""
    if (body.get("response_format") or {}).get("type") != "json_schema":
        system = body["messages"][0]["content"]
        name = next(n for n in ("ProposalOut", "RiskOut", "ValidationOut") if f'"title": "{n}"' in system)
        body = {**body, "response_format": {"type": "json_schema", "json_schema": {"name": name}}}
    return good_answers(body)


def _pipeline(server: OpenAIServer, after_calls: int) -> PipelineConfig:
    return pipeline(server.base_url, after_calls)


def _formats(server: OpenAIServer, since: int) -> list[str | None]:
    return [(b.get("response_format") or {}).get("type") for b in server.requests[since:]]


def test_two_cycles_each_below_the_call_count_add_up_to_the_recheck(market: Market, tmp_path: Path) -> None:
    """Two cycles (each a fresh ledger client and memory, as two scheduled runs are two processes) make
    m calls each in JSON mode; the re-check is due after m + 1, so only their sum can trigger it."""
    lake = tmp_path / "lake"
    replace_partitions(lake, "bars", "1d", market.bars, period="year")
    symbols = sorted(market.bars["symbol"].unique().to_list())
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    m = len([c for c in market.contexts() if c.wants])  # model calls per cycle: the symbols that signal
    assert m >= 2
    sent: list[list[str | None]] = []
    with OpenAIServer(responder=any_format_answers, refuse_formats={"json_schema"}) as server:
        pipeline = _pipeline(server, after_calls=m + 1)
        key = (server.base_url, "fake-small")
        for cycle in range(2):
            if cycle == 1:
                server.refuse_formats = set()  # the server was upgraded: only a re-check can find out
            FORMAT_MEMORY.forget()  # nothing carried over in the process: the ledger is the memory
            before = len(server.requests)
            with Ledger(url) as ledger:
                run_decision_cycle(
                    lake_root=lake, ledger=ledger, strategy=SMA_CROSS, params=PARAMS, symbols=symbols, timeframe="1d",
                    pipeline=pipeline, as_of=market.as_of, now=market.as_of + timedelta(days=4), run_id=f"cycle-{cycle}",
                )
            sent.append(_formats(server, before))
    first, second = sent
    assert first == ["json_schema"] + ["json_object"] * m  # learnt, then m calls in JSON mode: not yet due
    # The second cycle's first call is the (m + 1)th in JSON mode; the next is the re-check, accepted.
    assert second == ["json_object", "json_schema"] + ["json_schema"] * (m - 2)
    with Ledger(url) as ledger:
        steps = [(e.run_id, e.payload["from"], e.payload["to"], e.payload.get("recheck", False)) for e in ledger.events(types=[EventType.FALLBACK.value])]
        assert FormatMemory.from_ledger(ledger).get(key) == "json_schema"
    assert steps == [("cycle-0", "json_schema", "json_object", False), ("cycle-1", "json_object", "json_schema", True)]


def _event(type_: EventType, payload: dict[str, Any], minute: int) -> Event:
    from datetime import UTC, datetime

    at = datetime(2024, 3, 1, 15, minute, tzinfo=UTC)
    return Event(type=type_, run_id=f"r{minute}", mode="validation", as_of=at, payload=payload)


def test_the_count_is_the_responses_in_the_lesser_format_since_the_lesson() -> None:
    base, other = "http://srv/v1", "http://other/v1"
    lesson = {"kind": "format", "model": "m", "base_url": base, "from": "json_schema", "to": "json_object", "learnt_at": "2024-03-01T15:00:00+00:00"}
    events = [
        _event(EventType.RESPONSE, {"model": "m", "base_url": base, "format": "json_object"}, 0),  # before the lesson: not counted
        _event(EventType.FALLBACK, lesson, 1),
        _event(EventType.RESPONSE, {"model": "m", "base_url": base, "format": "json_object"}, 2),
        _event(EventType.RESPONSE, {"model": "m", "provider": f"m@{base}", "format": "json_object"}, 3),  # an older event: server in `provider`
        _event(EventType.RESPONSE, {"model": "m", "base_url": base, "format": "json_object", "cached": True}, 4),  # no call was made
        _event(EventType.RESPONSE, {"model": "m", "base_url": other, "format": "json_object"}, 5),  # another server
        _event(EventType.RESPONSE, {"model": "m", "base_url": base, "format": "prompt"}, 6),  # not the remembered format
    ]
    from trading.agents.llm import Recheck

    memory = FormatMemory.from_events(events)
    key = (base, "m")
    assert memory.choose(key, None, Recheck(after_days=None, after_calls=3)) == ("json_object", False)  # 2 counted, this is the 3rd
    assert memory.choose(key, None, Recheck(after_days=None, after_calls=3)) == ("json_schema", True)


def test_two_processes_each_below_the_call_count_add_up_to_the_recheck(market: Market, tmp_path: Path) -> None:
    """The same, each cycle in a separate Python process (`python -m tests.trading.format_recheck_cycle`)."""
    import json
    import os
    import subprocess
    import sys

    lake = tmp_path / "lake"
    replace_partitions(lake, "bars", "1d", market.bars, period="year")
    m = len([c for c in market.contexts() if c.wants])
    root = Path(__file__).resolve().parents[2]
    sent: list[list[str | None]] = []
    with OpenAIServer(responder=any_format_answers, refuse_formats={"json_schema"}) as server:
        for cycle in range(2):
            if cycle == 1:
                server.refuse_formats = set()
            before = len(server.requests)
            args = {"lake": str(lake), "ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite'}", "base_url": server.base_url,
                    "after_calls": m + 1, "as_of": market.as_of.isoformat(), "run_id": f"process-{cycle}"}
            done = subprocess.run(
                [sys.executable, "-m", "tests.trading.format_recheck_cycle", json.dumps(args)],
                cwd=root, env={**os.environ, "QL_TEST_KEY": "sk-test-123"}, capture_output=True, text=True, timeout=600, check=False,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            sent.append(_formats(server, before))
    assert sent == [["json_schema"] + ["json_object"] * m, ["json_object", "json_schema"] + ["json_schema"] * (m - 2)]
