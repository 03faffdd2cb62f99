"""Pipelines as LangGraph graphs: the default chain, files with edges and guards, the hard limits as code,
and checkpointed threads that resume after a cycle dies (through the loopback OpenAI server)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import OpenAIServer
from tests.trading.conftest import Market, good_answers, schema_name
from trading.agents import registry
from trading.agents.base import AgentRun, CostClass, Role
from trading.agents.registry import AgentConfigError, AgentSpec, AgentType
from trading.context import SymbolContext
from trading.events import MemorySink
from trading.graph import CheckpointConfigError
from trading.models import RiskAssessment, TradeProposal, Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig, load_pipeline_config
from trading.risk import RiskLimits

ROOMY = RiskLimits(max_open_positions=20, max_sector_pct=1.0, max_position_pct=0.05, max_trades_per_day=100)


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(responder=good_answers) as srv:
        yield srv


def _llm(server: OpenAIServer) -> dict[str, Any]:
    return {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}


def _asked(server: OpenAIServer) -> Counter[str]:
    return Counter(schema_name(body) for body in server.requests)


def _three_model_graph(server: OpenAIServer, *middle: dict[str, Any], after_limits: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "analyst", "type": "llm_analyst", "config": _llm(server)},
            *middle,
            {"id": "limits", "type": "hard_limits", "when": "trade"},
            *after_limits,
            {"id": "risk", "type": "llm_risk", "config": _llm(server), "when": "approved"},
            {"id": "validator", "type": "llm_validator", "config": _llm(server), "when": "approved"},
        ]
    }


def _trail(sink: MemorySink) -> list[tuple[str, str | None, str]]:
    return [(e.type.value, e.symbol, json.dumps(e.payload, sort_keys=True, default=str)) for e in sink.events if e.type.value != "cost"]


def test_the_default_graph_written_out_decides_and_records_as_the_three_keys(server: OpenAIServer, market: Market) -> None:
    contexts = market.contexts()
    keys = PipelineConfig(
        analyst=AgentSpec(type="llm_analyst", name="analyst", config=_llm(server)),
        risk=AgentSpec(type="llm_risk", name="risk", config=_llm(server)),
        validator=AgentSpec(type="llm_validator", name="validator", config=_llm(server)),
        limits=ROOMY,
        max_in_flight=1,  # one call at a time: the agents' own events come in symbol order too
    )
    graph = PipelineConfig.model_validate({"graph": _three_model_graph(server), "limits": ROOMY.model_dump(), "max_in_flight": 1})
    sinks = [MemorySink(), MemorySink()]
    results = [DecisionPipeline(cfg).run(contexts, market.snapshot, as_of=market.as_of, run_id="r", sink=sink) for cfg, sink in zip((keys, graph), sinks, strict=True)]
    assert results[0].decisions == results[1].decisions
    assert results[0].executed(), "the fixture's signals reach an EXECUTE"
    assert _trail(sinks[0]) == _trail(sinks[1])
    assert results[0].model_calls == results[1].model_calls == 3 * len([c for c in contexts if c.wants])


def test_a_hard_rejection_skips_the_model_reviewers(server: OpenAIServer, market: Market) -> None:
    """`when: approved` on the edges after the limits: a rejected trade costs no risk or validator call."""
    one = RiskLimits(max_open_positions=1, max_sector_pct=1.0)
    cfg = PipelineConfig.model_validate({"graph": _three_model_graph(server), "limits": one.model_dump()})
    result = DecisionPipeline(cfg).run(market.contexts(), market.snapshot, as_of=market.as_of)
    signalled = [c.symbol for c in market.contexts() if c.wants]
    assert len(signalled) >= 2
    # One trade fits (the first in symbol order); the others are rejected and never reach a reviewer.
    assert _asked(server) == Counter({"ProposalOut": len(signalled), "RiskOut": 1, "ValidationOut": 1})
    assert [d.symbol for d in result.executed()] == signalled[:1]
    assert sum(d.rationale.startswith("hard limits") for d in result.decisions) == len(signalled) - 1


def test_a_graph_without_the_limits_gets_them_after_its_last_node(market: Market) -> None:
    """Whatever the file says: a graph of just an analyst still passes every trade through the hard limits."""
    cfg = PipelineConfig.model_validate({"graph": {"nodes": [{"id": "a", "type": "rules_analyst"}]}, "limits": RiskLimits(max_open_positions=1).model_dump()})
    pipeline = DecisionPipeline(cfg)
    assert [n.id for n in pipeline.graph.spec.nodes] == ["a", "hard_limits"]
    result = pipeline.run(market.contexts(), market.snapshot, as_of=market.as_of)
    assert len(result.executed()) == 1  # one open position allowed, in symbol order
    assert sum(d.rationale.startswith("hard limits") for d in result.decisions) >= 1


def test_a_yaml_file_with_edges_and_guards_compiles_and_runs(tmp_path: Path, market: Market) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        """
name: edges
graph:
  nodes:
    - {id: analyst, type: rules_analyst}
    - {id: limits, type: hard_limits}
    - {id: risk, type: rules_risk, config: {min_confidence: 0.9}}
    - {id: check, type: rules_validator}
  edges:
    - {from: START, to: analyst}
    - {from: analyst, to: limits, when: trade}
    - {from: limits, to: risk, when: approved}
    - {from: risk, to: check, when: approved}
    - {from: check, to: END}
limits: {max_open_positions: 20, max_sector_pct: 1.0}
"""
    )
    cfg = load_pipeline_config(file)
    sink = MemorySink()
    result = DecisionPipeline(cfg).run(market.contexts(), market.snapshot, as_of=market.as_of, sink=sink)
    # The rule analyst's 0.6 confidence is under the risk node's 0.9: every entry is cut, none validated.
    entries = [d for d in result.decisions if d.rationale.startswith("risk review")]
    assert entries and not result.executed()
    assert not [e for e in sink.events if e.type.value == "validation"]


class _CutToOne:
    name = "cut"

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment:
        return hard.model_copy(update={"quantity": 1.0})


class _Enlarge:
    name = "enlarge"

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment:
        return hard.model_copy(update={"quantity": hard.quantity * 100})


def _register(monkeypatch: pytest.MonkeyPatch, name: str, role: Role, make: Any) -> None:
    monkeypatch.setitem(registry.BUILTIN_AGENTS, name, AgentType(name, role, CostClass.FREE, registry._NoConfig, lambda n, c, e: make(), "test node"))


def test_reviewers_after_the_limits_can_cut_but_never_enlarge(monkeypatch: pytest.MonkeyPatch, market: Market) -> None:
    _register(monkeypatch, "cut_to_one", Role.RISK, _CutToOne)
    _register(monkeypatch, "enlarge", Role.RISK, _Enlarge)
    base = PipelineConfig(limits=ROOMY)
    plain = DecisionPipeline(base).run(market.contexts(), market.snapshot, as_of=market.as_of).executed()
    nodes: list[dict[str, Any]] = [{"id": "a", "type": "rules_analyst"}, {"id": "l", "type": "hard_limits", "when": "trade"}]
    grown = PipelineConfig.model_validate({"graph": {"nodes": [*nodes, {"id": "e", "type": "enlarge"}]}, "limits": ROOMY.model_dump()})
    cut = PipelineConfig.model_validate({"graph": {"nodes": [*nodes, {"id": "e", "type": "enlarge"}, {"id": "c", "type": "cut_to_one"}]}, "limits": ROOMY.model_dump()})
    enlarged = DecisionPipeline(grown).run(market.contexts(), market.snapshot, as_of=market.as_of).executed()
    assert plain and [d.quantity for d in enlarged] == [d.quantity for d in plain]
    assert [d.quantity for d in DecisionPipeline(cut).run(market.contexts(), market.snapshot, as_of=market.as_of).executed()] == [1.0] * len(plain)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"nodes": [{"id": "a", "type": "rules_analyst", "when": "sunny"}]}, "unknown condition 'sunny'"),
        ({"nodes": [{"id": "a", "type": "rules_analyst"}], "edges": [{"from": "a", "to": "b"}]}, "names no node"),
        ({"nodes": [{"id": "a", "type": "rules_analyst"}, {"id": "a", "type": "rules_risk"}]}, "duplicate node ids"),
        ({"nodes": [{"id": "l", "type": "hard_limits"}, {"id": "a", "type": "rules_analyst"}]}, "follows the hard limits"),
        ({"nodes": [{"id": "r", "type": "rules_risk"}, {"id": "l", "type": "hard_limits"}]}, "needs the hard limits before it"),
        ({"nodes": [{"id": "a", "type": "oracle"}]}, "unknown agent type 'oracle'"),
    ],
)
def test_a_bad_graph_is_named(graph: dict[str, Any], message: str) -> None:
    with pytest.raises((AgentConfigError, ValueError), match=message):
        DecisionPipeline(PipelineConfig.model_validate({"graph": graph}))


def test_graph_and_role_keys_together_are_refused() -> None:
    with pytest.raises(ValueError, match="either `graph` or"):
        PipelineConfig.model_validate({"graph": {"nodes": [{"id": "a", "type": "rules_analyst"}]}, "analyst": {"type": "rules_analyst"}})


# -- checkpoints: a cycle that dies mid-graph resumes at the node it stopped in


class _Killed(RuntimeError):
    pass


ARMED: dict[str, bool] = {"on": True}


class _DieResearch:
    """Stands for the process dying after the analyst node: raises while armed."""

    name = "die"

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        if ARMED["on"]:
            raise _Killed(f"killed after the analyst on {ctx.symbol}")
        return {"die": "survived"}


class _DieReview:
    name = "die"

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment:
        if ARMED["on"]:
            raise _Killed(f"killed after the hard limits on {ctx.symbol}")
        return hard


@pytest.mark.parametrize("where", ["after the analyst", "after the hard limits"])
def test_a_killed_cycle_resumes_where_it_stopped_and_never_asks_a_model_twice(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: OpenAIServer, market: Market
) -> None:
    _register(monkeypatch, "die_research", Role.RESEARCH, _DieResearch)
    _register(monkeypatch, "die_review", Role.RISK, _DieReview)
    if where == "after the analyst":
        graph = _three_model_graph(server, {"id": "die", "type": "die_research"})
    else:
        graph = _three_model_graph(server, after_limits=({"id": "die", "type": "die_review", "when": "approved"},))
    raw = {"graph": graph, "limits": ROOMY.model_dump(), "checkpoint": str(tmp_path / "graph.sqlite")}
    contexts = market.contexts()
    signalled = [c for c in contexts if c.wants]

    ARMED["on"] = True
    with pytest.raises(_Killed):
        DecisionPipeline(PipelineConfig.model_validate(raw)).run(contexts, market.snapshot, as_of=market.as_of, run_id="cycle-1")
    asked_before = _asked(server)
    assert asked_before["ProposalOut"] == len(signalled)
    assert asked_before["RiskOut"] == asked_before["ValidationOut"] == 0

    ARMED["on"] = False  # the rerun: a new pipeline (as a new process would build), the same cycle and input
    resumed = DecisionPipeline(PipelineConfig.model_validate(raw)).run(contexts, market.snapshot, as_of=market.as_of, run_id="cycle-1")
    asked = _asked(server)
    assert asked["ProposalOut"] == len(signalled), "the analysts' answers came from the checkpoints"
    assert asked["RiskOut"] == asked["ValidationOut"] == len(resumed.executed()) == len(signalled)
    assert resumed.model_calls == 2 * len(signalled)

    # The same decisions as a cycle that never died (its own server, its own checkpoints).
    with OpenAIServer(responder=good_answers) as clean_server:
        clean_raw = {**raw, "graph": json.loads(json.dumps(graph).replace(server.base_url, clean_server.base_url)), "checkpoint": None}
        clean = DecisionPipeline(PipelineConfig.model_validate(clean_raw)).run(contexts, market.snapshot, as_of=market.as_of, run_id="cycle-1")
    assert resumed.decisions == clean.decisions
    assert [d.verdict for d in resumed.decisions if d.symbol in {c.symbol for c in signalled}] == [Verdict.EXECUTE] * len(signalled)

    # A finished cycle rerun on the same input asks nothing; a new input (another cycle) asks again.
    again = DecisionPipeline(PipelineConfig.model_validate(raw)).run(contexts, market.snapshot, as_of=market.as_of, run_id="cycle-1")
    assert again.decisions == resumed.decisions and again.model_calls == 0
    other = DecisionPipeline(PipelineConfig.model_validate(raw)).run(contexts, market.snapshot, as_of=market.as_of, run_id="cycle-2")
    assert other.model_calls == 3 * len(signalled)


def test_a_postgres_checkpoint_without_its_package_is_named_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package is installed here: hide it (a None entry in sys.modules makes its import fail) to see
    what a user without it gets at load, before any cycle runs."""
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres", None)
    with pytest.raises(CheckpointConfigError, match="langgraph-checkpoint-postgres"):
        DecisionPipeline(PipelineConfig(checkpoint="postgresql://quant@127.0.0.1:5432/test"))


def test_the_same_book_with_its_marks_in_another_order_resumes_the_same_threads(tmp_path: Path, server: OpenAIServer, market: Market) -> None:
    """Marks come in polars group_by's order, which differs between processes: a rerun of the same cycle
    in another process must still find its threads (the key used the snapshot's JSON in dict order)."""
    raw = {"graph": _three_model_graph(server), "limits": ROOMY.model_dump(), "checkpoint": str(tmp_path / "graph.sqlite")}
    marks = {c.symbol: c.close for c in market.contexts()}
    assert len(marks) > 1
    book = market.snapshot.model_copy(update={"prices": marks})
    first = DecisionPipeline(PipelineConfig.model_validate(raw)).run(market.contexts(), book, as_of=market.as_of, run_id="cycle-1")
    reordered = book.model_copy(update={"prices": dict(reversed(marks.items()))})
    again = DecisionPipeline(PipelineConfig.model_validate(raw)).run(market.contexts(), reordered, as_of=market.as_of, run_id="cycle-1")
    assert first.model_calls > 0 and again.model_calls == 0 and again.decisions == first.decisions
