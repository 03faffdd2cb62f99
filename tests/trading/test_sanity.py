"""Price sanity: levels far from the market, on the wrong side or out of order become HOLD, never an order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.conftest import Market, good_answers, schema_name
from trading.agents.registry import AgentSpec
from trading.events import EventType, MemorySink
from trading.models import Action, TradeProposal
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.sanity import SanityLimits, price_sanity

LIMITS = SanityLimits(entry_band_pct=0.05, max_atr_multiple=10)


def _p(action: str = "BUY", **levels: float | None) -> TradeProposal:
    return TradeProposal(symbol="AAPL", action=Action(action), confidence=0.8, rationale="r", **levels)


@pytest.mark.parametrize(
    ("proposal", "issue"),
    [
        (_p(entry=100, stop=95, target1=105, target2=110), None),
        (_p("SELL", entry=100, stop=105, target1=95, target2=90), None),
        (_p(entry=100_000, stop=95_000, target1=105_000, target2=110_000), "entry 100000 is 99900.0% from the last price 100"),
        (_p(entry=100, stop=101, target1=105), "stop 101 is not on the losing side"),
        (_p("SELL", entry=100, stop=99), "stop 99 is not on the losing side"),
        (_p(entry=100, stop=95, target1=99), "target1 99 is not on the winning side"),
        (_p(entry=100, stop=95, target1=110, target2=105), "target2 105 comes before target1 110"),
        (_p(entry=100, stop=50, target1=105), "stop 50 is 25.0 ATR from the last price 100"),
        (_p(), None),  # an exit with no levels
    ],
)
def test_price_sanity_names_the_level(proposal: TradeProposal, issue: str | None) -> None:
    issues = price_sanity(proposal, 100.0, 2.0, LIMITS)
    assert (issues == []) if issue is None else any(issue in i for i in issues), issues


levels = st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(["BUY", "SELL"]), entry=levels, stop=levels, t1=levels, t2=levels, atr=st.floats(min_value=0.01, max_value=50))
def test_whatever_levels_pass_are_near_the_market_and_on_their_sides(action: str, entry: float | None, stop: float | None, t1: float | None, t2: float | None, atr: float) -> None:
    last = 100.0
    p = _p(action, entry=entry, stop=stop, target1=t1, target2=t2)
    if price_sanity(p, last, atr, LIMITS):
        return
    sign = 1 if action == "BUY" else -1
    assert entry is None or abs(entry / last - 1) <= 0.05
    assert stop is None or (sign * (last - stop) > 0 and abs(stop - last) <= 10 * atr)
    for t in (t1, t2):
        assert t is None or (sign * (t - last) > 0 and abs(t - last) <= 10 * atr)
    assert t1 is None or t2 is None or sign * (t2 - t1) >= 0


def test_a_model_answer_a_thousand_times_the_market_is_held_with_the_reason(market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QL_TEST_KEY", "k")

    def thousandfold(body: dict[str, Any]) -> Reply:
        reply = good_answers(body)
        if schema_name(body) != "ProposalOut":
            return reply
        answer = json.loads(reply.content or "{}")
        return Reply(content=json.dumps({**answer, **{k: answer[k] * 1000 for k in ("entry", "stop", "target1", "target2")}}))

    contexts = [c for c in market.contexts() if c.wants]
    with OpenAIServer(responder=thousandfold) as server:
        llm = {"model": "m", "base_url": server.base_url, "api_key_env": "QL_TEST_KEY", "max_retries": 0}
        sink = MemorySink()
        result = DecisionPipeline(PipelineConfig(analyst=AgentSpec(type="llm_analyst", config=llm))).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    assert server.calls == len(contexts) and not result.executed()
    assert all(d.rationale.startswith("price sanity: ") and "from the last price" in d.rationale for d in result.decisions)
    assert [e.payload["stage"] for e in sink.of_type(EventType.RISK_ASSESSMENT)] == ["sanity"] * len(contexts)
