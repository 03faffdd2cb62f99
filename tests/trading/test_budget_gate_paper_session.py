"""The pre-run budget gate in a paper session, through paper_session_job: the session's own earlier bars
spend the month (the gate reads the session ledger's cost events at each bar), and once what is left
is short of a bar's worst case, the month's later bars make no model request. The real month (the run's
clock) is spent too, so January, a new month by the bars, is held by it as well.
The same gate (`DecisionPipeline.budget_gate`, checked in `trading.step.trading_step`) as decide runs."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.fakes.openai_server import OpenAIServer, Reply
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "MSFT"]
CALL_USD = 10.1  # each answer reports 10,000 prompt and 100 completion tokens at $1000 per 1M
MONTHLY_BUDGET = 15.0  # a bar's worst case (two calls at the prompt's size and the output cap) fits once


def _holds(body: dict[str, Any]) -> Reply:
    """The analyst holds: the book stays flat, so always_long signals (and would ask) at every bar."""
    answer = {"action": "HOLD", "confidence": 0.5, "rationale": "wait", "entry": None, "stop": None, "target1": None, "target2": None}
    return Reply(content=json.dumps(answer), prompt_tokens=10_000, completion_tokens=100)


def _session(tmp_path: Path, server: OpenAIServer) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    lake = tmp_path / "lake"
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime.fromisoformat("2023-11-01T00:00:00+00:00"), datetime.fromisoformat("2024-01-13T00:00:00+00:00"))
    replace_partitions(lake, "bars", "1d", daily, period="year")
    llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
    pipeline = {
        "graph": {"nodes": [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "limits", "type": "hard_limits", "when": "trade"}]},
        "prices": {"fake-small": [1000.0, 1000.0]},
        "budget": {"per_month": MONTHLY_BUDGET},
        "checkpoint": "memory",
    }
    (tmp_path / "pipeline.yaml").write_text(json.dumps(pipeline))
    trading = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'trading.sqlite'}", pipeline_file=str(tmp_path / "pipeline.yaml"))
    config = {"strategy": "tests.trading.always_long:ALWAYS_LONG", "symbols": SYMBOLS, "start": "2023-12-01", "end": "2024-01-13"}
    job = defs.resolve_job_def("paper_session_job")
    return job.execute_in_process(
        run_config={"ops": {"paper_session": {"config": config}}},
        resources={"lake": LakeResource(root=str(lake)), "trading": trading},
        tags={NOW_TAG: "2024-01-15T00:00:00+00:00"},
    )


def _asked_on(server: OpenAIServer) -> list[str]:
    """The decision bar (ISO date) of every model request, from the prompt's context."""
    users = [next(m["content"] for m in body["messages"] if m["role"] == "user") for body in server.requests]
    return [json.loads(content)["as_of"][:10] for content in users]


def test_a_nearly_spent_month_makes_no_model_request_for_the_rest_of_the_month(tmp_path: Path) -> None:
    with OpenAIServer(responder=_holds) as server:
        run = _session(tmp_path, server)
        asked = _asked_on(server)
    assert run.success
    [mat] = run.asset_materializations_for_node("paper_session")
    ledger = Ledger(f"sqlite:///{mat.metadata['ledger'].value}")
    try:
        steps = sorted({e.as_of.date().isoformat() for e in ledger.events(types=[EventType.COST.value]) if e.payload.get("scope") == "run"})
        budget = [e for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "budget"]
        holds = [e for e in ledger.events(types=[EventType.DECISION.value]) if "monthly budget" in str(e.payload.get("rationale"))]
    finally:
        ledger.close()
    december = [d for d in steps if d.startswith("2023-12")]
    january = [d for d in steps if d.startswith("2024-01")]
    assert len(december) > 5 and len(january) > 3, "the session decides on every bar of both months"
    # The first December bar spends more than the month has left after it ($20.20 of $15); from then on
    # every December bar is gated before its first request. January is a new month by the bars, but the
    # run's real month has already spent $20.20 of $15 (the session's spend counts against the trading
    # ledger's budget), so it makes no request either.
    assert asked == [december[0]] * len(SYMBOLS), asked
    gated = {e.as_of.date().isoformat() for e in budget}
    assert gated == set(december[1:] + january)
    assert all("no model call made" in e.payload["detail"] and "monthly budget $15.0000" in e.payload["reason"] for e in budget)
    assert len(holds) == len(SYMBOLS) * len(gated), "each signalled symbol is held, saying why"
