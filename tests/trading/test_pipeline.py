"""The decision cycle on the rule-based defaults: deterministic, point-in-time, limits applied in order."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from strategies.builtin import SMA_CROSS
from tests.trading.conftest import PARAMS, Market
from trading.agents.registry import AgentConfigError, AgentSpec
from trading.context import build_contexts
from trading.events import EventType, MemorySink
from trading.models import Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.risk import RiskLimits


def _plain(decisions: list) -> list[dict]:
    return [d.model_dump(exclude={"run_id"}) for d in decisions]


def test_rule_based_cycle_is_deterministic_and_follows_the_signals(market: Market) -> None:
    contexts = market.contexts()
    first = DecisionPipeline(PipelineConfig()).run(contexts, market.snapshot, as_of=market.as_of)
    second = DecisionPipeline(PipelineConfig()).run(contexts, market.snapshot, as_of=market.as_of)
    assert _plain(first.decisions) == _plain(second.decisions)
    assert [d.symbol for d in first.decisions] == sorted(c.symbol for c in contexts)
    wants = {c.symbol: c.wants for c in contexts}
    executed = {d.symbol for d in first.executed()}
    assert executed and executed <= {s for s, w in wants.items() if w == "BUY"}
    for d in first.decisions:
        if wants[d.symbol] is None:
            assert (d.verdict, d.rationale) == (Verdict.HOLD, "no signal")
    for d in first.executed():
        assert d.decided_at == market.as_of
        assert (d.stop, d.target1, d.target2) == (None, None, None)  # sma_cross has no levels: none invented
        assert d.quantity > 0 and d.quantity == int(d.quantity)
    atr = PipelineConfig(analyst=AgentSpec(type="rules_analyst", config={"default_levels": True}))
    for d in DecisionPipeline(atr).run(contexts, market.snapshot, as_of=market.as_of).executed():
        assert d.stop is not None and d.entry is not None and d.stop < d.entry < d.target1 < d.target2  # type: ignore[operator]
    assert first.model_calls == 0 and first.costs["run_cost_usd"] == 0


def test_contexts_never_see_bars_after_the_decision_bar(market: Market) -> None:
    truncated = market.bars.filter(pl.col("ts") <= market.as_of)
    future_poisoned = pl.concat(
        [truncated, market.bars.filter(pl.col("ts") > market.as_of).with_columns(pl.col("close") * 1000)]
    )
    with_future, _ = build_contexts(future_poisoned, SMA_CROSS, PARAMS, market.as_of, market.snapshot)
    without, _ = build_contexts(truncated, SMA_CROSS, PARAMS, market.as_of, market.snapshot)
    assert with_future == without


def test_a_stale_symbol_is_held_not_judged_on_old_prices(market: Market) -> None:
    bars = market.bars.filter(~((pl.col("symbol") == "XOM") & (pl.col("ts") == market.as_of)))
    contexts, skipped = build_contexts(bars, SMA_CROSS, PARAMS, market.as_of, market.snapshot)
    assert "XOM" in skipped and "stale data" in skipped["XOM"]
    assert "XOM" not in {c.symbol for c in contexts}


def test_hard_limits_hold_across_the_cycle_not_just_per_trade(market: Market) -> None:
    contexts = market.contexts()
    buyers = sorted(c.symbol for c in contexts if c.wants == "BUY")
    assert len(buyers) >= 2
    # One sector cap for all buyers, the size of one position: the first buyer fills it, the rest
    # must be held by the sector limit (each alone would pass every per-trade cap).
    limits = RiskLimits(max_position_pct=0.2, max_sector_pct=0.2, sector_map={s: "tech" for s in buyers})
    result = DecisionPipeline(PipelineConfig(limits=limits)).run(contexts, market.snapshot, as_of=market.as_of)
    prices = {c.symbol: c.close for c in contexts}
    exposure = sum(d.quantity * prices[d.symbol] for d in result.executed())
    assert 0 < exposure <= 0.2 * market.snapshot.equity
    assert len(result.executed()) == 1
    held = [d for d in result.decisions if d.symbol in buyers and d.verdict == Verdict.HOLD]
    assert len(held) == len(buyers) - 1 and all("sector tech" in d.rationale for d in held)
    # A looser sector cap trims the second buyer to what is left, never past the cap.
    looser = RiskLimits(max_position_pct=0.2, max_sector_pct=0.25, sector_map={s: "tech" for s in buyers})
    trimmed = DecisionPipeline(PipelineConfig(limits=looser)).run(contexts, market.snapshot, as_of=market.as_of)
    assert 0.2 * market.snapshot.equity < sum(d.quantity * prices[d.symbol] for d in trimmed.executed()) <= 0.25 * market.snapshot.equity


def test_open_position_cap_rejects_new_names(market: Market) -> None:
    contexts = market.contexts()
    result = DecisionPipeline(PipelineConfig(limits=RiskLimits(max_open_positions=1))).run(contexts, market.snapshot, as_of=market.as_of)
    assert len(result.executed()) == 1


def test_every_step_is_an_event_with_run_id_and_decision_time(market: Market) -> None:
    sink = MemorySink()
    result = DecisionPipeline(PipelineConfig()).run(market.contexts(), market.snapshot, as_of=market.as_of, sink=sink, run_id="r1")
    kinds = {e.type for e in sink.events}
    assert {EventType.SIGNAL, EventType.PROPOSAL, EventType.RISK_ASSESSMENT, EventType.VALIDATION, EventType.DECISION, EventType.COST} <= kinds
    assert all(e.run_id == "r1" for e in sink.events)
    assert all(e.as_of == market.as_of for e in sink.events)
    decided = [e.symbol for e in sink.of_type(EventType.DECISION)]
    assert decided == [d.symbol for d in result.decisions]


def test_exit_signal_closes_the_whole_position_even_with_breakers_tripped(market: Market) -> None:
    signals = SMA_CROSS.signals(market.bars, PARAMS)
    exit_row = signals.filter(pl.col("exit_long") & (pl.col("ts") > market.as_of)).row(0, named=True)
    as_of, symbol = exit_row["ts"], exit_row["symbol"]
    snapshot = market.snapshot.model_copy(
        update={"positions": {symbol: 37.0}, "prices": {symbol: exit_row["close"]}, "equity": 70_000.0, "peak_equity": 100_000.0}
    )
    contexts, _ = build_contexts(market.bars, SMA_CROSS, PARAMS, as_of, snapshot)
    result = DecisionPipeline(PipelineConfig()).run(contexts, snapshot, as_of=as_of)
    exit_decision = next(d for d in result.decisions if d.symbol == symbol)
    assert (exit_decision.verdict, exit_decision.side, exit_decision.quantity) == (Verdict.EXECUTE, "sell", 37.0)
    # The drawdown breaker (30 % down) blocks every new entry in the same cycle.
    assert all(d.symbol == symbol for d in result.executed())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"analyst": {"type": "oracle"}}, "unknown agent type 'oracle'"),
        ({"analyst": {"type": "rules_risk"}}, "is a risk agent, not a analyst agent"),
        ({"analyst": {"type": "rules_analyst", "config": {"stop_atr": -1}}}, "stop_atr"),
        ({"analyst": {"type": "llm_analyst", "config": {"model": "llama3.1", "base_url": "http://x/v1", "timeout_s": 0}}}, "timeout_s"),
    ],
)
def test_bad_pipeline_config_is_named(config: dict, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        DecisionPipeline(PipelineConfig.model_validate(config))


def test_missing_key_for_a_model_agent_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AgentConfigError, match=r"needs an API key in \$OPENAI_API_KEY"):
        DecisionPipeline(PipelineConfig(analyst=AgentSpec(type="llm_analyst")))


def test_negative_limits_are_rejected_at_load() -> None:
    with pytest.raises(ValueError, match="max_position_pct"):
        PipelineConfig.model_validate({"limits": {"max_position_pct": -0.1}})
    with pytest.raises(ValueError, match="per_run"):
        PipelineConfig.model_validate({"budget": {"per_run": -1}})


def test_decision_time_is_the_bar_not_the_wall_clock(market: Market) -> None:
    result = DecisionPipeline(PipelineConfig()).run(market.contexts(), market.snapshot, as_of=market.as_of)
    assert {d.decided_at for d in result.decisions} == {market.as_of}
    assert market.as_of < market.bars["ts"].max() - timedelta(days=30)  # a past bar: replayable


def test_user_agents_load_as_plugins(market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel

    from trading.agents import registry
    from trading.agents.base import CostClass, Role
    from trading.models import Action, TradeProposal

    class Contrarian:
        name = "contrarian"

        def propose(self, ctx, run):  # type: ignore[no-untyped-def]
            return TradeProposal(symbol=ctx.symbol, action=Action.HOLD, confidence=1.0, rationale="never chase")

    class NoConfig(BaseModel):
        pass

    plugin = registry.AgentType("contrarian", Role.ANALYST, CostClass.FREE, NoConfig, lambda n, c, e: Contrarian())

    class EntryPoint:
        name, value = "contrarian", "user_pkg.agents:CONTRARIAN"

        def load(self) -> registry.AgentType:
            return plugin

    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint()] if group == "quantlake.agents" else [])
    assert registry.agent_types()["contrarian"].config_schema() == {"properties": {}, "title": "NoConfig", "type": "object"}
    result = DecisionPipeline(PipelineConfig(analyst=AgentSpec(type="contrarian"))).run(market.contexts(), market.snapshot, as_of=market.as_of)
    assert not result.executed()
    assert any(d.rationale == "analyst: never chase" for d in result.decisions)
