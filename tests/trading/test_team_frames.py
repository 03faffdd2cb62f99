"""The research team's model nodes read the timeframes their `llm.frames` declares, as the llm_* nodes
do: the cycle reads them point in time, each node's prompt carries exactly its declared bars (none
closed after the decision bar's close), a node whose prompt shows no context (the manager) gets them
beside its payload, and `quantlake estimate` counts their text."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.always_long import ALWAYS_LONG
from tests.trading.conftest import schema_name
from tests.trading.test_model_frames import TUESDAY, _lake
from tests.trading.test_multi_timeframe import MONDAY, minutes
from trading.context import frames_prompt_chars
from trading.cost import estimate_tokens
from trading.cycle import run_decision_cycle
from trading.estimate import PROMPT_CHARS_WITHOUT_HISTORY, pipeline_estimate
from trading.ledger import Ledger
from trading.pipeline import PipelineConfig

TECHNICAL = {"1h": 5, "1d": 2}  # daily trend and hourly entry
MANAGER = {"1h": 8, "1d": 1}  # more hours than the analyst: the context holds 8, each prompt its own
ANSWERS: dict[str, dict[str, Any]] = {  # every team node agrees: the plan reaches the manager
    "ReportOut": {"stance": "bullish", "score": 0.5, "summary": "up"},
    "ArgumentOut": {"argument": "it goes", "conviction": 0.7},
    "DecisionOut": {"approve": True, "rationale": "fine"},
    "VoiceOut": {"keep_fraction": 1.0, "argument": "keep"},
}


def _answer(body: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps(ANSWERS[schema_name(body)]), prompt_tokens=100, completion_tokens=10)


def _team(llm: dict[str, Any]) -> PipelineConfig:
    """technical (1h x 5 + 1d x 2) -> bull -> bear (one round) -> trader -> risk debate -> manager (1h x 8 + 1d x 1)."""
    def model(frames: dict[str, int] | None) -> dict[str, Any]:
        return {"llm": {**llm, **({"frames": frames} if frames else {})}}

    nodes = [
        {"id": "technical", "type": "technical_analyst", "config": model(TECHNICAL)},
        {"id": "bull", "type": "bull_researcher", "config": {"rounds": 1}},
        {"id": "bear", "type": "bear_researcher", "config": {"rounds": 1}},
        {"id": "trader", "type": "trader", "config": {}},
        {"id": "risk_debate", "type": "risk_debate", "config": {}},
        {"id": "manager", "type": "portfolio_manager", "config": model(MANAGER)},
        {"id": "hard_limits", "type": "hard_limits"},
    ]
    edges = [
        {"from": "START", "to": "technical"}, {"from": "technical", "to": "bull"}, {"from": "bull", "to": "bear"},
        {"from": "bear", "to": "bull", "when": "debating"}, {"from": "bear", "to": "trader", "when": "debated"},
        {"from": "trader", "to": "risk_debate", "when": "trade"}, {"from": "risk_debate", "to": "manager"},
        {"from": "manager", "to": "hard_limits", "when": "trade"},
    ]  # fmt: skip
    return PipelineConfig.model_validate({"graph": {"nodes": nodes, "edges": edges}, "checkpoint": "memory", "limits": {"max_sector_pct": 1.0}})


def _user(body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))


def test_team_nodes_get_their_declared_frames_point_in_time(tmp_path: Path) -> None:
    lake, as_of = _lake(tmp_path)  # minutes Monday to Wednesday; the decision bar is Tuesday's daily bar
    tuesday_close = datetime.fromisoformat(f"{TUESDAY}T21:00:00+00:00")
    with OpenAIServer(responder=_answer) as server, Ledger("sqlite://") as ledger:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        run_decision_cycle(lake_root=lake, ledger=ledger, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), symbols=["AAPL"], timeframe="1d",
                           pipeline=_team(llm), as_of=as_of, now=as_of + timedelta(days=2))  # fmt: skip
        asked = {schema_name(b): _user(b) for b in server.requests}
    assert sorted(asked) == ["DecisionOut", "ReportOut"], "the technical analyst and the manager asked the model, once each"

    technical = asked["ReportOut"]["frames"]
    assert {tf: len(f["bars"]) for tf, f in technical.items()} == TECHNICAL, "both declared timeframes, as many bars as declared"
    hours = [datetime.fromisoformat(b["ts"]) for b in technical["1h"]["bars"]]
    days = [datetime.fromisoformat(b["ts"]) for b in technical["1d"]["bars"]]
    assert all(ts < tuesday_close for ts in hours) and hours[-1] == tuesday_close - timedelta(minutes=30), "no hour of Wednesday"
    assert [d.date().isoformat() for d in days] == [MONDAY, TUESDAY], "the daily frame ends at the decision bar"
    last_close = float(minutes(MONDAY, TUESDAY)["close"][-1])
    assert technical["1h"]["bars"][-1]["close"] == technical["1d"]["bars"][-1]["close"] == last_close, "Tuesday's last minute, not a later one"

    manager = asked["DecisionOut"]
    assert "context" not in manager and {tf: len(f["bars"]) for tf, f in manager["frames"].items()} == MANAGER, "only its own frame"
    assert manager["frames"]["1h"]["bars"][-5:] == technical["1h"]["bars"] and manager["frames"]["1d"]["bars"] == technical["1d"]["bars"][-1:]


def test_the_estimate_counts_the_team_nodes_frames() -> None:
    """Before any recorded call, each framed node's prompt is the default size plus its frames' text."""
    llm = {"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
    with Ledger("sqlite://") as ledger:
        nodes = pipeline_estimate(ledger, _team(llm), symbols=3, day=date(2026, 11, 24))["nodes"]
    assert sorted(nodes) == ["manager", "technical"]
    for name, frames in (("technical", TECHNICAL), ("manager", MANAGER)):
        assert nodes[name]["prompt_tokens"] == estimate_tokens(PROMPT_CHARS_WITHOUT_HISTORY + frames_prompt_chars(frames)), f"{name}: its frames' text"
        assert "other timeframes' bars" in nodes[name]["basis"]
