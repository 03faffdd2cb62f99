"""Model agents through the real openai / langchain-openai clients against a loopback OpenAI server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.conftest import Market, good_answers, schema_name
from trading.agents.cache import CacheMode, ResponseCache
from trading.agents.registry import AgentSpec
from trading.agents.tools import standard_tools
from trading.cost import Budget
from trading.events import EventType, MemorySink
from trading.models import Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.risk import RiskLimits

PRICES = {"fake-small": (1.0, 4.0), "fake-large": (10.0, 40.0)}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(responder=good_answers) as srv:
        yield srv


def _llm(server: OpenAIServer, model: str = "fake-small", **settings: Any) -> dict[str, Any]:
    # The key is a value handed down (orchestration reads the environment): trading never looks it up.
    return {"model": model, "base_url": server.base_url, "key": SecretStr("sk-test-123"), "max_retries": 0, "timeout_s": 5.0, **settings}


def _config(server: OpenAIServer, *, analyst: dict[str, Any] | None = None, risk: bool = False, validator: bool = False, **kw: Any) -> PipelineConfig:
    return PipelineConfig(
        analyst=AgentSpec(type="llm_analyst", config=analyst or _llm(server)),
        risk=AgentSpec(type="llm_risk", config=_llm(server, "fake-large")) if risk else AgentSpec(type="rules_risk"),
        validator=AgentSpec(type="llm_validator", config=_llm(server)) if validator else AgentSpec(type="rules_validator"),
        prices=PRICES,
        **kw,
    )



def test_a_good_answer_flows_through_every_model_agent_with_costs_from_usage(server: OpenAIServer, market: Market) -> None:
    rich = market.snapshot.model_copy(update={"cash": 1e7, "equity": 1e7})  # no hard limit binds to zero
    contexts = market.contexts(rich)
    signalled = sorted(c.symbol for c in contexts if c.wants)
    sink = MemorySink()
    result = DecisionPipeline(_config(server, risk=True, validator=True)).run(contexts, rich, as_of=market.as_of, sink=sink)
    # No signal, no model call: only the signalled symbols reach the model, three agents each.
    assert server.calls == result.model_calls == 3 * len(signalled)
    assert {d.symbol for d in result.executed()} == set(signalled)
    assert all(d.rationale.startswith("model likes") for d in result.executed())
    assert all(p == "/v1/chat/completions" for p in server.paths)
    assert all(h == "Bearer sk-test-123" for h in server.auth_headers)
    models = {schema_name(b): b["model"] for b in server.requests}
    assert models == {"ProposalOut": "fake-small", "RiskOut": "fake-large", "ValidationOut": "fake-small"}
    # Usage from the responses, priced by the table: 1000 in / 100 out tokens per call.
    n = len(signalled)
    small, large = (1000 * 1.0 + 100 * 4.0) / 1e6, (1000 * 10.0 + 100 * 40.0) / 1e6
    assert result.costs["prompt_tokens"] == 3000 * n and result.costs["completion_tokens"] == 300 * n
    assert result.costs["run_cost_usd"] == pytest.approx(n * (2 * small + large))
    assert result.costs["per_agent"]["llm_risk"]["usd"] == pytest.approx(n * large)
    # Prompts and responses are recorded, and no key is in any event.
    assert len(sink.of_type(EventType.PROMPT)) == 3 * n
    assert "sk-test-123" not in json.dumps([e.model_dump(mode="json") for e in sink.events])


def test_the_risk_model_can_cut_but_never_enlarge(server: OpenAIServer, market: Market) -> None:
    contexts = market.contexts()
    # An account where the dearest buyer fits exactly one share under the 20 % position cap (no
    # sector cap in the way).
    dearest = max(c.close for c in contexts if c.wants == "BUY")
    equity = 7.5 * dearest
    small = market.snapshot.model_copy(update={"cash": equity, "equity": equity, "start_of_day_equity": equity, "peak_equity": equity})
    contexts = market.contexts(small)
    limits = RiskLimits(max_position_pct=0.2, max_sector_pct=1.0)
    rules = DecisionPipeline(_config(server, limits=limits)).run(contexts, small, as_of=market.as_of)
    halved = DecisionPipeline(_config(server, risk=True, limits=limits)).run(contexts, small, as_of=market.as_of)
    full = {d.symbol: d.quantity for d in rules.executed()}
    kept = {s: float(int(q * 0.5)) for s, q in full.items()}
    assert {d.symbol: d.quantity for d in halved.executed()} == {s: q for s, q in kept.items() if q > 0}
    assert any(q == 1 for q in full.values()) and any(q == 0 for q in kept.values())  # one share halved is none: held


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(content="{not json"), "invalid"),
        (Reply(refusal="I can't help with trading."), "refusal"),
        (Reply(content='{"action": "BUY"', finish_reason="length"), "length"),
        (Reply(status=500, content="upstream exploded"), "error"),
        (Reply(content=json.dumps({"action": "BUY", "confidence": 0.9, "rationale": "x", "entry": -5, "stop": None, "target1": None, "target2": None})), "invalid"),
    ],
)
def test_a_failing_model_falls_back_to_the_rules_and_says_so(server: OpenAIServer, market: Market, reply: Reply, kind: str) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    server.responder = lambda body: reply
    sink = MemorySink()
    result = DecisionPipeline(_config(server)).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    rules = DecisionPipeline(PipelineConfig()).run(contexts, market.snapshot, as_of=market.as_of)
    fallbacks = sink.of_type(EventType.FALLBACK)
    assert [(e.symbol, e.payload["kind"]) for e in fallbacks] == [(contexts[0].symbol, kind)]
    assert [d.model_dump(exclude={"run_id"}) for d in result.decisions] == [d.model_dump(exclude={"run_id"}) for d in rules.decisions]


def test_rate_limit_is_retried_with_backoff_then_answered(server: OpenAIServer, market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    server.script(Reply(status=429, content="slow down"))
    sink = MemorySink()
    result = DecisionPipeline(_config(server, analyst=_llm(server, max_retries=2))).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    assert server.calls == 2
    assert not sink.of_type(EventType.FALLBACK)
    assert result.executed()[0].rationale.startswith("model likes")


def test_a_hung_model_times_out_and_falls_back(server: OpenAIServer, market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    # The reply never comes on its own (the delay ends only when the server closes, after the test):
    # without a working timeout the run blocks until pytest-timeout fails it. No clock is read.
    server.responder = lambda body: Reply(content="{}", delay=3600.0)
    sink = MemorySink()
    DecisionPipeline(_config(server, analyst=_llm(server, timeout_s=0.3))).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    assert [e.payload["kind"] for e in sink.of_type(EventType.FALLBACK)] == ["timeout"]


def test_hard_rejection_skips_the_risk_model(server: OpenAIServer, market: Market) -> None:
    contexts = market.contexts()
    busy_day = market.snapshot.model_copy(update={"trades_today": 20})
    result = DecisionPipeline(_config(server, risk=True, validator=True)).run(contexts, busy_day, as_of=market.as_of)
    assert not result.executed()
    assert {schema_name(b) for b in server.requests} == {"ProposalOut"}  # no RiskOut, no ValidationOut


def test_budget_stops_the_run_cleanly_with_an_intervention(server: OpenAIServer, market: Market) -> None:
    contexts = market.contexts()
    signalled = [c.symbol for c in contexts if c.wants]
    sink = MemorySink()
    config = _config(server, risk=True, budget=Budget(per_run=0.0001), max_in_flight=1)
    result = DecisionPipeline(config).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    assert len(result.decisions) == len(contexts)  # every symbol has a decision, none half-made
    assert not result.executed()
    assert server.calls == 0  # the first estimate already exceeds $0.0001
    [intervention] = sink.of_type(EventType.INTERVENTION)
    assert intervention.payload["kind"] == "budget" and "run budget" in intervention.payload["detail"]
    assert all("budget" in d.rationale for d in result.decisions if d.symbol in signalled)


def test_daily_budget_counts_what_the_day_already_spent(server: OpenAIServer, market: Market) -> None:
    contexts = market.contexts()
    config = _config(server, budget=Budget(per_day=1.0))
    sink = MemorySink()
    result = DecisionPipeline(config).run(contexts, market.snapshot, as_of=market.as_of, sink=sink, spent_today=0.99999)
    assert server.calls == 0 and not result.executed()
    assert "daily budget" in sink.of_type(EventType.INTERVENTION)[0].payload["detail"]


def test_analyst_tools_run_and_return_errors_as_data(server: OpenAIServer, market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    symbol = contexts[0].symbol
    server.script(
        Reply(tool_calls=[{"name": "get_features", "arguments": {"symbol": symbol}}, {"name": "get_features", "arguments": {"symbol": "NOPE"}}, {"name": "launch_rocket", "arguments": {}}]),
        Reply(content="I have what I need."),
    )
    tools = standard_tools(market.bars, {c.symbol: c.features for c in contexts}, {}, [])
    sink = MemorySink()
    result = DecisionPipeline(_config(server, analyst=_llm(server, max_tool_rounds=2))).run(
        contexts, market.snapshot, as_of=market.as_of, sink=sink, tools=tools
    )
    calls = sink.of_type(EventType.TOOL_CALL)
    assert [c.payload["result"]["ok"] for c in calls] == [True, False, False]
    assert calls[0].payload["result"]["result"] == contexts[0].features
    assert "unknown symbol 'NOPE'" in calls[1].payload["result"]["error"]
    assert "unknown tool 'launch_rocket'" in calls[2].payload["result"]["error"]
    assert server.calls == 3  # two tool rounds, then the structured answer
    tool_messages = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 3
    assert result.executed()[0].rationale.startswith("model likes")


def test_replay_from_cached_outputs_makes_no_calls_and_repeats_decisions(server: OpenAIServer, market: Market, tmp_path: Path) -> None:
    contexts = market.contexts()
    recorded = DecisionPipeline(_config(server, risk=True, validator=True), cache=ResponseCache(tmp_path, CacheMode.RECORD)).run(
        contexts, market.snapshot, as_of=market.as_of
    )
    config = _config(server, risk=True, validator=True)
    assert server.calls > 0
    server.stop()  # the model is gone: a replay must not need it
    replay = DecisionPipeline(config, cache=ResponseCache(tmp_path, CacheMode.REPLAY))
    replayed = replay.run(contexts, market.snapshot, as_of=market.as_of)
    assert replayed.model_calls == 0
    assert [d.model_dump(exclude={"run_id"}) for d in replayed.decisions] == [d.model_dump(exclude={"run_id"}) for d in recorded.decisions]
    assert replayed.costs["run_cost_usd"] == 0


def test_replay_of_an_unrecorded_moment_falls_back_instead_of_calling(server: OpenAIServer, market: Market, tmp_path: Path) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    sink = MemorySink()
    DecisionPipeline(_config(server), cache=ResponseCache(tmp_path, CacheMode.REPLAY)).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    assert server.calls == 0
    assert [e.payload["kind"] for e in sink.of_type(EventType.FALLBACK)] == ["replay_miss"]


def test_model_calls_run_concurrently_up_to_the_limit(market: Market) -> None:
    contexts = [c.model_copy(update={"signal": {**c.signal, "entry_long": True}}) for c in market.contexts()]
    with OpenAIServer(responder=good_answers, default_delay=0.2) as slow:
        result = DecisionPipeline(_config(slow, max_in_flight=4)).run(contexts, market.snapshot, as_of=market.as_of)
    assert slow.calls == len(contexts) == 10
    # Concurrency observed by the server, not by a stopwatch: 200 ms replies overlap 4 deep, never 5.
    assert slow.max_in_flight == 4
    assert len(result.decisions) == 10 and all(d.verdict in (Verdict.EXECUTE, Verdict.HOLD) for d in result.decisions)
