"""Price sanity: levels far from the market, on the wrong side or out of order become HOLD, never an order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.conftest import Market, good_answers, schema_name
from trading.agents.base import AgentRun
from trading.agents.registry import AgentSpec
from trading.context import SymbolContext
from trading.events import EventType, MemorySink
from trading.models import Action, TradeProposal, Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.sanity import SanityLimits, StrategyLevels, price_sanity

LIMITS = SanityLimits(entry_band_pct=0.05, max_atr_multiple=10, strategy_atr_multiple=5)


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


@pytest.mark.parametrize(
    ("own", "issue"),
    [
        (StrategyLevels(entry=100, stop=94, target1=106, target2=112), None),
        (StrategyLevels(entry=94), "entry 100 is 6.4% from the strategy's entry 94"),
        (StrategyLevels(entry=100, stop=80), "stop 95 is 7.5 ATR from the strategy's stop 80 (at most 5)"),
        (StrategyLevels(target2=125), "target2 110 is 7.5 ATR from the strategy's target2 125"),
        (StrategyLevels(stop=float("nan"), target1=None), None),  # a level the strategy did not set
    ],
)
def test_price_sanity_against_the_strategys_own_levels(own: StrategyLevels, issue: str | None) -> None:
    issues = price_sanity(_p(entry=100, stop=95, target1=105, target2=110), 100.0, 2.0, LIMITS, own)
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


def _sane(action: str, last: float, atr: float, own: StrategyLevels, entry: float | None, stop: float | None, t1: float | None, t2: float | None) -> bool:
    """The limit as the issue states it, written out separately from trading.sanity."""
    sign = 1 if action == "BUY" else -1
    if entry is not None and (abs(entry / last - 1) > 0.05 or (own.entry is not None and abs(entry / own.entry - 1) > 0.05)):
        return False
    for key, level in (("stop", stop), ("target1", t1), ("target2", t2)):
        if level is None:
            continue
        beyond = sign * (last - level) if key == "stop" else sign * (level - last)  # > 0: on its own side of the market
        if beyond <= 0 or abs(level - last) > 10 * atr:
            return False
        ref = getattr(own, key)
        if ref is not None and abs(level - ref) > 5 * atr:
            return False
    return t1 is None or t2 is None or sign * (t2 - t1) >= 0


prices = st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False)
near = st.one_of(st.none(), st.floats(min_value=0.5, max_value=1.5).map(lambda f: 100.0 * f))  # levels near a 100 market, so both outcomes occur


@settings(max_examples=400, deadline=None)
@given(
    action=st.sampled_from(["BUY", "SELL"]),
    last=st.one_of(st.just(100.0), prices),
    atr=st.floats(min_value=0.01, max_value=50),
    model=st.tuples(st.one_of(near, levels), st.one_of(near, levels), st.one_of(near, levels), st.one_of(near, levels)),
    own=st.tuples(st.one_of(near, levels), st.one_of(near, levels), st.one_of(near, levels), st.one_of(near, levels)),
)
def test_price_sanity_fires_exactly_when_a_level_breaks_a_rule(
    action: str, last: float, atr: float, model: tuple[float | None, ...], own: tuple[float | None, ...]
) -> None:
    """Arbitrary levels for the model and for the strategy: the limit passes the sane ones and names every other."""
    entry, stop, t1, t2 = model
    strategy = StrategyLevels(*own)
    issues = price_sanity(_p(action, entry=entry, stop=stop, target1=t1, target2=t2), last, atr, LIMITS, strategy)
    assert (not issues) == _sane(action, last, atr, strategy, entry, stop, t1, t2), issues


class _FixedLevels:
    """An analyst answering the strategy's side with given levels (a model can answer anything)."""

    name = "fixed"

    def __init__(self, levels: dict[str, float | None]) -> None:
        self.levels = levels

    def propose(self, ctx: SymbolContext, run: AgentRun) -> TradeProposal:
        return TradeProposal(symbol=ctx.symbol, action=Action(ctx.wants), confidence=0.9, rationale="fixed", **self.levels)


@settings(max_examples=60, deadline=None)
@given(
    scale=st.tuples(*[st.one_of(st.none(), st.floats(min_value=0.97, max_value=1.03), st.floats(min_value=0.001, max_value=1000.0))] * 4),
    mark=st.one_of(st.just(1.0), st.floats(min_value=0.9, max_value=1.1)),
)
def test_no_order_carries_an_insane_level_whatever_the_analyst_says(market: Market, scale: tuple[float | None, ...], mark: float) -> None:
    """Through the pipeline: levels at arbitrary multiples of the close, the market's mark moved; every
    EXECUTE is sane against the mark and the strategy's entry, every other signalled symbol is HOLD with a reason."""
    contexts = [c for c in market.contexts() if c.wants]
    snapshot = market.snapshot.model_copy(update={"prices": {c.symbol: c.close * mark for c in contexts}})
    pipeline = DecisionPipeline(PipelineConfig())
    decisions = []
    for ctx in contexts:
        levels = {k: (None if f is None else ctx.close * f) for k, f in zip(("entry", "stop", "target1", "target2"), scale, strict=True)}
        pipeline.analyst = _FixedLevels(levels)
        decisions += pipeline.run([ctx], snapshot, as_of=market.as_of).decisions
    for ctx, d in zip(contexts, decisions, strict=True):
        atr = ctx.features.get("atr_14")
        own = StrategyLevels(ctx.close)
        if d.verdict == Verdict.EXECUTE:
            assert not price_sanity(_p(ctx.wants or "BUY", entry=d.entry, stop=d.stop, target1=d.target1, target2=d.target2), ctx.close * mark, atr, SanityLimits(), own)
        else:
            assert d.rationale


def test_the_model_entry_is_held_against_the_strategys_entry_when_the_market_moved(market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark moved 4 % since the decision bar; a model entry at the mark +4 % is within 5 % of the
    market but 8 % from the close the strategy signalled at: HOLD, the reason names the strategy's entry."""
    monkeypatch.setenv("QL_TEST_KEY", "k")

    def above(body: dict[str, Any]) -> Reply:
        reply = good_answers(body)
        if schema_name(body) != "ProposalOut":
            return reply
        answer = json.loads(reply.content or "{}")
        return Reply(content=json.dumps({**answer, "entry": answer["entry"] * 1.08, "stop": None, "target1": None, "target2": None}))

    contexts = [c for c in market.contexts() if c.wants]
    snapshot = market.snapshot.model_copy(update={"prices": {c.symbol: c.close * 1.04 for c in contexts}})
    with OpenAIServer(responder=above) as server:
        llm = {"model": "m", "base_url": server.base_url, "api_key_env": "QL_TEST_KEY", "max_retries": 0}
        sink = MemorySink()
        result = DecisionPipeline(PipelineConfig(analyst=AgentSpec(type="llm_analyst", config=llm))).run(contexts, snapshot, as_of=market.as_of, sink=sink)
    assert server.calls == len(contexts) and not result.executed()
    assert all("from the strategy's entry" in d.rationale and "from the last price" not in d.rationale for d in result.decisions)
