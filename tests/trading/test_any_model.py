"""Any OpenAI-compatible model, per server behaviour: what the cycle used, why it fell back, what it charged.

Every test drives the real langchain-openai / openai clients against the loopback server and asserts
what the cycle did (decisions, fallbacks, response and cost events) and what the server observed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.fakes.openai_server import OpenAIServer, Reply, fenced
from tests.trading.conftest import Market, good_answers
from trading.agents.llm import FORMAT_MEMORY
from trading.agents.llm_agents import ProposalOut
from trading.agents.registry import AgentSpec, fill_model_defaults
from trading.agents.structured import read_answer
from trading.context import SymbolContext
from trading.cost import Budget
from trading.events import Event, EventType, MemorySink
from trading.pipeline import CycleResult, DecisionPipeline, PipelineConfig

PRICED = {"fake-small": (1.0, 4.0)}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("QL_TEST_KEY", "sk-test-123")
    FORMAT_MEMORY.forget()  # what a refusing server taught must not leak into the next test's server
    yield
    FORMAT_MEMORY.forget()


def any_format_answers(body: dict[str, Any]) -> Reply:
    """`good_answers` whatever format was asked: the schema is named by json_schema or by the prompt."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") != "json_schema":
        system = body["messages"][0]["content"]
        name = next(n for n in ("ProposalOut", "RiskOut", "ValidationOut") if f'"title": "{n}"' in system)
        body = {**body, "response_format": {"type": "json_schema", "json_schema": {"name": name}}}
    return good_answers(body)


def _config(server: OpenAIServer, model: str = "fake-small", *, risk: bool = False, **kw: Any) -> PipelineConfig:
    llm = {"model": model, "base_url": server.base_url, "api_key_env": "QL_TEST_KEY", "max_retries": 0, "timeout_s": 5.0}
    return PipelineConfig(
        analyst=AgentSpec(type="llm_analyst", config=llm),
        risk=AgentSpec(type="llm_risk", config=llm) if risk else AgentSpec(type="rules_risk"),
        prices=kw.pop("prices", PRICED),
        **kw,
    )


def _all_signal(market: Market) -> list[SymbolContext]:
    return [c.model_copy(update={"signal": {**c.signal, "entry_long": True}}) for c in market.contexts()]


def _run(server: OpenAIServer, market: Market, contexts: list[SymbolContext] | None = None, **kw: Any) -> tuple[CycleResult, MemorySink]:
    contexts = contexts if contexts is not None else [c for c in market.contexts() if c.wants]
    spent = {k: kw.pop(k) for k in ("spent_today", "tokens_today") if k in kw}
    sink = MemorySink()
    result = DecisionPipeline(_config(server, **kw)).run(contexts, market.snapshot, as_of=market.as_of, sink=sink, **spent)
    return result, sink


def _agent_events(sink: MemorySink, type_: EventType) -> list[Event]:
    return [e for e in sink.of_type(type_) if "agent" in e.payload]


# ---- unknown models: tokens always, money when priced ------------------------------------------------


def test_an_unknown_model_runs_unpriced_with_its_tokens_recorded(market: Market) -> None:
    with OpenAIServer(responder=good_answers) as server:
        result, sink = _run(server, market, model="llama3.1")
    n = len([c for c in market.contexts() if c.wants])
    assert server.calls == result.model_calls == n and server.models_seen == ["llama3.1"]
    assert all(d.rationale.startswith("model likes") for d in result.executed()) and result.executed()
    assert not sink.of_type(EventType.FALLBACK)
    costs = result.costs
    assert (costs["total_tokens"], costs["unpriced_tokens"], costs["run_cost_usd"]) == (1100 * n, 1100 * n, 0.0)
    assert costs["unpriced_models"] == ["llama3.1"] and costs["estimated_tokens"] == 0
    charges = _agent_events(sink, EventType.COST)
    assert [(e.payload["usd"], e.payload["pricing"], e.payload["prompt_tokens"]) for e in charges] == [(None, "unpriced", 1000)] * n
    [run_cost] = [e for e in sink.of_type(EventType.COST) if e.payload.get("scope") == "run"]
    assert run_cost.payload["unpriced_tokens"] == 1100 * n


def test_a_default_price_prices_unknown_models(market: Market) -> None:
    with OpenAIServer(responder=good_answers) as server:
        result, sink = _run(server, market, model="llama3.1", default_price=(2.0, 10.0))
    n = server.calls
    assert n > 0 and result.costs["unpriced_tokens"] == 0
    assert result.costs["run_cost_usd"] == pytest.approx(n * (1000 * 2.0 + 100 * 10.0) / 1e6)
    assert {e.payload["pricing"] for e in _agent_events(sink, EventType.COST)} == {"default"}


def test_token_budget_per_run_stops_an_unpriced_model(market: Market) -> None:
    with OpenAIServer(responder=good_answers) as server:
        result, sink = _run(server, market, _all_signal(market), model="llama3.1", budget=Budget(per_run=0.0, tokens_per_run=2500), max_in_flight=1)
    # A USD budget of $0 does not see unpriced tokens; the token budget binds after two 1,100-token calls.
    assert server.calls == 2 and result.costs["total_tokens"] == 2200
    [stop] = sink.of_type(EventType.INTERVENTION)
    assert stop.payload["kind"] == "budget" and "run token budget 2500" in stop.payload["detail"]
    # The stop is clean: nothing judged after it executes, every symbol has its decision.
    assert len(result.decisions) == 10 and not result.executed() and all("budget" in d.rationale for d in result.decisions)


def test_token_budget_per_day_counts_what_the_day_used(market: Market) -> None:
    with OpenAIServer(responder=good_answers) as server:
        result, sink = _run(server, market, model="llama3.1", budget=Budget(tokens_per_day=10_000), tokens_today=9_800)
    assert server.calls == 0 and not result.executed()
    assert "daily token budget 10000" in sink.of_type(EventType.INTERVENTION)[0].payload["detail"]


# ---- usage missing: a marked local estimate, charged and budgeted -------------------------------------


def test_missing_usage_is_estimated_marked_and_charged(market: Market) -> None:
    with OpenAIServer(responder=good_answers, send_usage=False) as server:
        result, sink = _run(server, market)
        requests = list(server.requests)
    assert result.executed() and not sink.of_type(EventType.FALLBACK)
    responses = _agent_events(sink, EventType.RESPONSE)
    assert len(responses) == len(requests) > 0
    by_symbol = {json.loads(r["messages"][1]["content"])["symbol"]: r for r in requests}
    for response in responses:
        request = by_symbol[response.symbol]
        prompt_chars = sum(len(m["content"]) for m in request["messages"])
        expected = {"prompt_tokens": math.ceil(prompt_chars / 4), "completion_tokens": math.ceil(len(response.payload["content"]) / 4), "estimated": True}
        assert response.payload["usage"] == expected
        assert response.payload["cost_usd"] == pytest.approx((expected["prompt_tokens"] * 1.0 + expected["completion_tokens"] * 4.0) / 1e6)
    assert result.costs["estimated_tokens"] == result.costs["total_tokens"] > 0 and result.costs["run_cost_usd"] > 0


@pytest.mark.parametrize("send_usage", [True, False])
def test_a_daily_budget_stops_a_server_with_or_without_usage(market: Market, send_usage: bool) -> None:
    """The issue's case: without usage, calls used to cost $0 and never stopped; now both servers stop."""
    with OpenAIServer(responder=good_answers, send_usage=send_usage) as server:
        result, sink = _run(server, market, _all_signal(market), budget=Budget(per_day=0.004), max_in_flight=1)
    assert 0 < server.calls < 10
    assert result.costs["run_cost_usd"] <= 0.004 and result.costs["estimated_tokens"] == (0 if send_usage else result.costs["total_tokens"])
    assert "daily budget" in sink.of_type(EventType.INTERVENTION)[0].payload["detail"]


# ---- structured output that degrades gracefully -------------------------------------------------------


@pytest.mark.parametrize(
    ("wrap", "found"),
    [
        (lambda r: r, "json"),
        (fenced, "fence"),
        (lambda r: Reply(content=f"My answer: {r.content} Hope this helps.", prompt_tokens=1000, completion_tokens=100), "embedded"),
    ],
)
def test_json_in_a_fence_or_after_prose_is_used_and_charged(market: Market, wrap: Any, found: str) -> None:
    with OpenAIServer(responder=lambda body: wrap(good_answers(body))) as server:
        result, sink = _run(server, market)
    assert result.executed() and all(d.rationale.startswith("model likes") for d in result.executed())
    assert not sink.of_type(EventType.FALLBACK)
    responses = _agent_events(sink, EventType.RESPONSE)
    assert [(e.payload["outcome"], e.payload["found"], e.payload["format"]) for e in responses] == [("used", found, "json_schema")] * server.calls
    assert result.costs["run_cost_usd"] == pytest.approx(server.calls * (1000 * 1.0 + 100 * 4.0) / 1e6)


@pytest.mark.parametrize(
    ("reply", "outcome", "kind"),
    [
        (fenced(Reply(content='{"action": "BUY", "confidence": 7}', prompt_tokens=1000, completion_tokens=100)), "rejected", "invalid"),
        (Reply(content="I would rather not say.", prompt_tokens=1000, completion_tokens=100), "rejected", "invalid"),
        (Reply(content='{"action": "BUY", "confid', finish_reason="length", prompt_tokens=1000, completion_tokens=100), "cut_off", "length"),
        (Reply(refusal="I can't help with trading.", prompt_tokens=1000, completion_tokens=100), "refused", "refusal"),
        (Reply(content=json.dumps({"action": "BUY", "confidence": 0.9, "rationale": "x", "entry": -5, "stop": None, "target1": None, "target2": None}), prompt_tokens=1000, completion_tokens=100), "rejected", "invalid"),
    ],
)
def test_a_response_that_cannot_be_used_is_recorded_charged_and_falls_back(market: Market, reply: Reply, outcome: str, kind: str) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    with OpenAIServer(responder=lambda body: reply) as server:
        result, sink = _run(server, market, contexts)
    [response] = _agent_events(sink, EventType.RESPONSE)
    assert (response.payload["outcome"], response.payload["usage"]) == (outcome, {"prompt_tokens": 1000, "completion_tokens": 100, "estimated": False})
    assert response.payload["reason"]
    [fallback] = sink.of_type(EventType.FALLBACK)
    assert (fallback.payload["kind"], fallback.payload["to"]) == (kind, "rules")
    assert result.costs["run_cost_usd"] == pytest.approx((1000 * 1.0 + 100 * 4.0) / 1e6)
    assert len(result.decisions) == 1 and not result.decisions[0].rationale.startswith("model likes")


def test_a_server_refusing_json_schema_gets_json_mode_remembered_per_model(market: Market) -> None:
    with OpenAIServer(responder=any_format_answers, refuse_formats={"json_schema"}) as server:
        result, sink = _run(server, market, max_in_flight=1)
        n = len(result.executed())
        formats = [(b.get("response_format") or {}).get("type") for b in server.requests]
        again, again_sink = _run(server, market, max_in_flight=1)  # a later cycle in the same process
        later = [(b.get("response_format") or {}).get("type") for b in server.requests[len(formats) :]]
    assert n >= 2 and all(d.rationale.startswith("model likes") for d in result.executed())
    assert formats == ["json_schema"] + ["json_object"] * n and server.refused == 1
    assert later == ["json_object"] * n and not again_sink.of_type(EventType.FALLBACK)
    [step] = sink.of_type(EventType.FALLBACK)
    assert (step.payload["kind"], step.payload["from"], step.payload["to"]) == ("format", "json_schema", "json_object")
    assert "HTTP 400" in step.payload["detail"]
    assert {e.payload["format"] for e in _agent_events(sink, EventType.RESPONSE)} == {"json_object"}
    assert "ProposalOut" in server.requests[1]["messages"][0]["content"]  # the schema went into the prompt
    assert [d.model_dump(exclude={"run_id"}) for d in again.decisions] == [d.model_dump(exclude={"run_id"}) for d in result.decisions]


def test_symbols_in_flight_wait_for_the_first_probe_of_a_new_server(market: Market) -> None:
    """Eight calls at once to a server never heard from: one asks for json_schema and is refused, the
    others wait for that answer and go straight to JSON mode."""
    with OpenAIServer(responder=any_format_answers, refuse_formats={"json_schema"}, default_delay=0.1) as server:
        result, sink = _run(server, market, _all_signal(market), max_in_flight=8)
        formats = [(b.get("response_format") or {}).get("type") for b in server.requests]
    assert formats == ["json_schema"] + ["json_object"] * 10 and server.refused == 1
    assert len(sink.of_type(EventType.FALLBACK)) == 1 and all(d.rationale.startswith("model likes") for d in result.executed())
    assert server.max_in_flight > 1  # once settled, the calls run concurrently again


def test_a_server_refusing_both_formats_gets_the_schema_in_a_plain_prompt(market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    with OpenAIServer(responder=lambda b: fenced(any_format_answers(b)), refuse_formats={"json_schema", "json_object"}) as server:
        result, sink = _run(server, market, contexts)
        formats = [(b.get("response_format") or {}).get("type") for b in server.requests]
    assert formats == ["json_schema", "json_object", None]
    assert [(e.payload["from"], e.payload["to"]) for e in sink.of_type(EventType.FALLBACK)] == [("json_schema", "json_object"), ("json_object", "prompt")]
    assert result.executed()[0].rationale.startswith("model likes")
    [response] = _agent_events(sink, EventType.RESPONSE)
    assert (response.payload["format"], response.payload["found"], response.payload["outcome"]) == ("prompt", "fence", "used")


def test_read_answer_takes_the_first_object_valid_for_the_schema() -> None:
    good = {"action": "HOLD", "confidence": 0.5, "rationale": "r", "entry": None, "stop": None, "target1": None, "target2": None}
    text = f'Context {{"note": 1}} then ```json\n{json.dumps(good)}\n```'
    answer = read_answer(ProposalOut, text)
    assert answer.parsed == ProposalOut(**good) and answer.found == "fence"
    assert read_answer(ProposalOut, "").error == "empty answer"
    assert "action" in (read_answer(ProposalOut, '{"confidence": 2}').error or "")


# ---- OPENAI_MODEL / OPENAI_BASE_URL fill in, never erase -----------------------------------------------


def test_env_model_fills_in_what_the_pipeline_file_leaves_open() -> None:
    file = {"analyst": {"type": "llm_analyst", "config": {"timeout_s": 3}}, "risk": {"type": "llm_risk", "config": {"model": "gpt-4o", "base_url": "https://api.openai.com/v1"}}}
    filled = fill_model_defaults(file, model="llama3.1", base_url="http://127.0.0.1:11434/v1")
    assert filled["analyst"]["config"] == {"timeout_s": 3, "model": "llama3.1", "base_url": "http://127.0.0.1:11434/v1"}
    assert filled["risk"] == file["risk"]  # what the file says stays
    assert fill_model_defaults({}, model="llama3.1")["analyst"] == {"type": "llm_analyst", "config": {"model": "llama3.1"}}
    assert fill_model_defaults({"analyst": {"type": "rules_analyst"}}, model="llama3.1") == {"analyst": {"type": "rules_analyst"}}
    assert fill_model_defaults({}, base_url="http://x/v1") == {}  # a base URL alone names no model
    assert file["analyst"]["config"] == {"timeout_s": 3}  # the input is not changed


# ---- provider fallback chain: model A, then model B (another server), then the rules -----------------


def _chain(a: OpenAIServer, b: OpenAIServer, timeout_s: float = 5.0, **kw: Any) -> PipelineConfig:
    llm = {"model": "fake-small", "base_url": a.base_url, "api_key_env": "QL_TEST_KEY", "max_retries": 0, "timeout_s": timeout_s}
    fallback = {"model": "llama3.1", "base_url": b.base_url, "timeout_s": 5.0}
    return PipelineConfig(analyst=AgentSpec(type="llm_analyst", config={**llm, "fallbacks": [fallback]}), prices=PRICED, max_in_flight=1, **kw)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(content="{}", delay=2.0), "timeout"),  # a slow server
        (Reply(status=429, content="rate limited"), "error"),  # still limited after the client's retries
        (Reply(content='{"action": "BUY", "confid', finish_reason="length", prompt_tokens=1000, completion_tokens=100), "length"),
        (fenced(Reply(content='{"action": "BUY"}')), "invalid"),
    ],
)
def test_each_way_model_a_fails_hands_the_symbol_to_model_b(market: Market, reply: Reply, kind: str) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    with OpenAIServer(responder=lambda body: reply) as a, OpenAIServer(responder=good_answers) as b:
        sink = MemorySink()
        result = DecisionPipeline(_chain(a, b, timeout_s=0.5)).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
        calls, second = (a.calls, b.calls), f"llama3.1@{b.base_url}"
    assert calls == (1, 1)
    [step] = sink.of_type(EventType.FALLBACK)
    assert (step.payload["kind"], step.payload["to"]) == (kind, second) and step.payload["detail"]
    assert result.executed()[0].rationale.startswith("model likes")
    used = [e.payload["provider"] for e in _agent_events(sink, EventType.RESPONSE) if e.payload["outcome"] == "used"]
    assert used == [second]


def test_a_failing_provider_falls_back_to_the_next_server_and_is_skipped_for_the_cycle(market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants]
    n = len(contexts)
    with OpenAIServer(responder=lambda body: Reply(status=500, content="model overloaded")) as a, OpenAIServer(responder=good_answers) as b:
        pipeline = DecisionPipeline(_chain(a, b))
        sink = MemorySink()
        result = pipeline.run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
        a_calls, b_calls = a.calls, b.calls
        again = pipeline.run(contexts, market.snapshot, as_of=market.as_of, sink=MemorySink())  # a new run asks A again
        a_again = a.calls - a_calls
        # A paper session is one run over many bars: each bar is its own cycle, A is asked again on each.
        before = a.calls
        for shift in (0, 1):
            bar = market.as_of + timedelta(days=shift)
            pipeline.run([c.model_copy(update={"as_of": bar}) for c in contexts], market.snapshot, as_of=bar, run_id="session")
        a_per_bar = a.calls - before
        b_models = list(b.models_seen)
        first, second = f"fake-small@{a.base_url}", f"llama3.1@{b.base_url}"
    assert n >= 2 and (a_calls, b_calls, a_again, a_per_bar) == (1, n, 1, 2) and b_models == ["llama3.1"]
    assert len(result.executed()) == n and all(d.rationale.startswith("model likes") for d in result.executed())
    assert [d.model_dump(exclude={"run_id"}) for d in again.decisions] == [d.model_dump(exclude={"run_id"}) for d in result.decisions]
    steps = [(e.payload["kind"], e.payload["from"], e.payload["to"]) for e in sink.of_type(EventType.FALLBACK)]
    assert steps == [("error", first, second)] + [("skipped", first, second)] * (n - 1)
    skipped = sink.of_type(EventType.FALLBACK)[1].payload["detail"]
    assert "failed earlier in this cycle" in skipped and "HTTP 500" in skipped and "model overloaded" in skipped
    # Which provider answered: every used response is B's, charged as B (unpriced, tokens counted).
    responses = _agent_events(sink, EventType.RESPONSE)
    assert [(e.payload["outcome"], e.payload["provider"], e.payload["pricing"]) for e in responses] == [("used", second, "unpriced")] * n
    assert result.costs["unpriced_tokens"] == result.costs["total_tokens"] == 1100 * n and result.costs["run_cost_usd"] == 0


def test_when_every_provider_fails_the_rules_decide_and_each_step_says_why(market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants][:1]
    with OpenAIServer(responder=lambda body: Reply(status=503, content="down")) as a, OpenAIServer(
        responder=lambda body: Reply(content="I would rather not say.", prompt_tokens=1000, completion_tokens=100)
    ) as b:
        sink = MemorySink()
        result = DecisionPipeline(_chain(a, b)).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
        calls = (a.calls, b.calls)
        first, second = f"fake-small@{a.base_url}", f"llama3.1@{b.base_url}"
    assert calls == (1, 1)
    steps = [(e.payload["kind"], e.payload.get("from"), e.payload["to"]) for e in sink.of_type(EventType.FALLBACK)]
    assert steps == [("error", first, second), ("invalid", second, "rules")]
    [response] = _agent_events(sink, EventType.RESPONSE)  # B's answer is recorded and charged though unusable
    assert (response.payload["outcome"], response.payload["provider"]) == ("rejected", second)
    [decision] = result.decisions
    assert decision.rationale.startswith("sma_cross: entry signal")  # the rule analyst's proposal


def test_a_pipeline_file_names_the_chain_and_fallbacks_inherit_the_rest(tmp_path: Any) -> None:
    from trading.agents.llm import LLMSettings
    from trading.pipeline import load_pipeline_config

    file = tmp_path / "pipeline.yaml"
    file.write_text(
        "analyst:\n  type: llm_analyst\n  config:\n    model: gpt-4o-mini\n    timeout_s: 3\n    fallbacks:\n"
        "      - {model: llama3.1, base_url: 'http://127.0.0.1:11434/v1'}\n      - {model: qwen2.5, timeout_s: 30}\n"
    )
    config = load_pipeline_config(file)
    chain = LLMSettings.model_validate(config.analyst.config).chain()
    assert [(s.provider, s.timeout_s) for s in chain] == [
        ("gpt-4o-mini@openai", 3.0),
        ("llama3.1@http://127.0.0.1:11434/v1", 3.0),
        ("qwen2.5@openai", 30.0),
    ]
    file.write_text("analyst: {type: llm_analyst, config: {model: m, fallbacks: [{timeout_s: 3}]}}\n")
    with pytest.raises(ValueError, match="fallbacks.0: Value error, a fallback names a model or a base_url"):
        DecisionPipeline(load_pipeline_config(file))


# ---- a remembered format is re-checked: servers get upgraded ---------------------------------------------


def _formats_sent(server: OpenAIServer, since: int = 0) -> list[str | None]:
    return [(b.get("response_format") or {}).get("type") for b in server.requests[since:]]


def _on(contexts: list[SymbolContext], day: Any) -> list[SymbolContext]:
    return [c.model_copy(update={"as_of": day}) for c in contexts]


def test_a_remembered_format_is_asked_again_after_the_recheck_days_and_restored(market: Market) -> None:
    """Day 0 the server refuses json_schema (JSON mode remembered); it is upgraded; day 3 the memory
    still holds (not due); day 8 one call asks for json_schema again, is answered, and every later call
    uses it. The days are the caller's clock (the decision bar), and the ledger's events rebuild it."""
    from trading.agents.llm import FormatMemory

    contexts = [c for c in market.contexts() if c.wants]
    n = len(contexts)
    day0 = market.as_of
    sinks = []
    with OpenAIServer(responder=any_format_answers, refuse_formats={"json_schema"}) as server:
        pipeline = DecisionPipeline(_config(server, max_in_flight=1))
        key = (server.base_url, "fake-small")
        for day in (0, 3, 8):
            sinks.append(MemorySink())
            if day == 3:
                server.refuse_formats = set()  # the server now honours json_schema
            before = len(server.requests)
            when = day0 + timedelta(days=day)
            result = pipeline.run(_on(contexts, when), market.snapshot, as_of=when, sink=sinks[-1])
            assert len(result.executed()) == n, day
            sent = _formats_sent(server, before)
            if day == 0:
                assert sent == ["json_schema"] + ["json_object"] * n
            elif day == 3:
                assert sent == ["json_object"] * n and not sinks[-1].of_type(EventType.FALLBACK)
            else:
                assert sent == ["json_schema"] * n
    [upgrade] = sinks[2].of_type(EventType.FALLBACK)
    assert (upgrade.payload["kind"], upgrade.payload["from"], upgrade.payload["to"], upgrade.payload["recheck"]) == ("format", "json_object", "json_schema", True)
    learnt = FormatMemory.from_events(e for sink in sinks[:1] for e in sink.events)
    assert learnt.get(key) == "json_object"  # what the ledger said before the re-check
    assert FormatMemory.from_events(e for sink in sinks for e in sink.events).get(key) == "json_schema"


def test_a_recheck_the_server_still_refuses_keeps_the_format_and_restarts_the_count(market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants]
    contexts = (contexts * 5)[:5]
    with OpenAIServer(responder=any_format_answers, refuse_formats={"json_schema"}) as server:
        config = _config(server, max_in_flight=1)
        analyst = config.analyst.model_copy(update={"config": {**config.analyst.config, "format_recheck_calls": 2, "format_recheck_days": None}})
        sink = MemorySink()
        result = DecisionPipeline(config.model_copy(update={"analyst": analyst})).run(
            [c.model_copy(update={"symbol": f"S{i}"}) for i, c in enumerate(contexts)], market.snapshot, as_of=market.as_of, sink=sink
        )
        sent = _formats_sent(server)
    # Two calls in JSON mode, then one re-check (refused), two more, another re-check.
    assert sent == ["json_schema", "json_object", "json_object", "json_schema", "json_object", "json_object", "json_schema", "json_object"]
    assert len(result.executed()) + len([d for d in result.decisions if d.verdict.value == "HOLD"]) == 5
    steps = [(e.payload["from"], e.payload["to"], e.payload.get("recheck", False)) for e in sink.of_type(EventType.FALLBACK)]
    assert steps == [("json_schema", "json_object", False), ("json_schema", "json_object", True), ("json_schema", "json_object", True)]


def test_recheck_rule() -> None:
    from datetime import UTC, datetime

    from trading.agents.llm import Recheck

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rule = Recheck(after_days=7, after_calls=100)
    assert not rule.due(t0, 99, t0 + timedelta(days=6, hours=23))
    assert rule.due(t0, 99, t0 + timedelta(days=7)) and rule.due(t0, 100, t0)
    assert not Recheck(after_days=None, after_calls=None).due(t0, 10**6, t0 + timedelta(days=10**4))


# ---- the estimate's worst case over the chain, and what each provider did --------------------------------


def test_the_estimate_gives_the_worst_case_over_the_fallback_chain_and_names_the_costliest(market: Market) -> None:
    from trading.cost import PriceTable, estimate_call_cost

    contexts = [c for c in market.contexts() if c.wants]
    n = len(contexts)
    llm = {"model": "fake-small", "base_url": "http://127.0.0.1:9/v1", "max_output_tokens": 600}
    fallbacks = [{"model": "llama3.1", "base_url": "http://127.0.0.1:10/v1"}, {"model": "gpt-4o", "max_output_tokens": 1000}]
    config = PipelineConfig(analyst=AgentSpec(type="llm_analyst", config={**llm, "fallbacks": fallbacks}), prices={**PRICED, "gpt-4o": (2.5, 10.0)})
    estimate = DecisionPipeline(config).estimate(contexts)
    prices = PriceTable(config.prices)
    chars = max(len(json.dumps(c.prompt_view(), default=str)) for c in contexts) + 1_500
    first, big = estimate_call_cost(prices, "fake-small", chars, 600), estimate_call_cost(prices, "gpt-4o", chars, 1000)
    assert estimate["usd"] == pytest.approx(n * first)  # what usually happens: the first provider answers
    assert estimate["usd_worst_case"] == pytest.approx(n * (first + big)) and big > first
    assert estimate["costliest_providers"] == {"llm_analyst": "gpt-4o@http://127.0.0.1:9/v1"}  # inherits A's server
    assert estimate["unpriced_providers"] == ["llama3.1@http://127.0.0.1:10/v1"]  # its share is not in the USD


def test_the_run_counts_answers_failures_fallbacks_and_tokens_per_provider(market: Market) -> None:
    contexts = [c for c in market.contexts() if c.wants]
    n = len(contexts)
    with OpenAIServer(responder=lambda body: Reply(status=500, content="model overloaded")) as a, OpenAIServer(
        responder=lambda body: good_answers(body) if body["messages"][-1]["content"].find(contexts[0].symbol) < 0 else Reply(content="no idea", prompt_tokens=10, completion_tokens=5)
    ) as b:
        result = DecisionPipeline(_chain(a, b)).run(contexts, market.snapshot, as_of=market.as_of, sink=MemorySink())
        first, second = f"fake-small@{a.base_url}", f"llama3.1@{b.base_url}"
    per = result.costs["per_provider"]
    assert per[first] == {"responses": 0, "answers": 0, "cached": 0, "failures": {"error": 1, "skipped": n - 1}, "fallbacks": n, "to_rules": 0, "tokens": 0, "estimated_tokens": 0, "usd": 0.0}
    assert per[second] == {
        "responses": n, "answers": n - 1, "cached": 0, "failures": {"invalid": 1}, "fallbacks": 0, "to_rules": 1,
        "tokens": 1100 * (n - 1) + 15, "estimated_tokens": 0, "usd": 0.0,  # llama3.1 is unpriced: tokens only
    }
    assert sum(p["tokens"] for p in per.values()) == result.costs["total_tokens"]
