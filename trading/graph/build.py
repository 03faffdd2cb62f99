"""A GraphSpec compiled to a LangGraph `StateGraph`, one thread per (cycle, symbol).

The state holds only JSON (proposal, hard, soft, validation, notes), so any checkpointer stores it and
a resumed thread rebuilds the same models. The symbol's context and the cycle's services (events,
costs, tools) travel in the run's config, never in the checkpoint.

The hard limits node is an interrupt: every thread stops before it, the pipeline runs the limits as
code in symbol order on a running portfolio (trading/pipeline.py), and the threads resume with the
verdict. Only risk reviewers and validators may follow it, and they can only cut, so nothing the
graph does after the limits can enlarge or change what they approved.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Checkpointer

from trading.agents.base import AgentRun, Role
from trading.agents.registry import AgentConfigError, AgentSpec, BuildEnv, agent_types, build_agent
from trading.context import SymbolContext
from trading.graph.spec import END as SPEC_END
from trading.graph.spec import START as SPEC_START
from trading.graph.spec import WHEN, GraphSpec
from trading.models import RiskAssessment, TradeProposal, ValidationResult

_AFTER_LIMITS = (Role.RISK, Role.VALIDATOR)


def _merge(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    return {**(old or {}), **(new or {})}


class GraphState(TypedDict, total=False):
    symbol: str
    proposal: dict[str, Any] | None
    hard: dict[str, Any] | None
    soft: dict[str, Any] | None
    validation: dict[str, Any] | None
    notes: Annotated[dict[str, Any], _merge]


@dataclass
class CycleInputs:
    """What the nodes of one cycle share: contexts by symbol, the run's services, the limits' verdicts."""

    contexts: dict[str, SymbolContext]
    run: AgentRun
    hard: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> {"proposal", "hard"}


def _proposal(state: Mapping[str, Any]) -> TradeProposal | None:
    return TradeProposal.model_validate(state["proposal"]) if state.get("proposal") else None


def _assessment(state: Mapping[str, Any]) -> RiskAssessment:
    return RiskAssessment.model_validate(state.get("soft") or state["hard"])


class PipelineGraph:
    """The compiled graph of one pipeline and the agents behind its nodes."""

    def __init__(self, spec: GraphSpec, env: BuildEnv, name: str = "default") -> None:
        self.name = name
        self.spec = spec.with_hard_limits()
        types = agent_types()
        self.roles: dict[str, Role] = {}
        self.agents: dict[str, Any] = {}
        for node in self.spec.nodes:
            kind = types.get(node.type)
            if kind is None:
                raise AgentConfigError(f"unknown agent type {node.type!r} (graph node {node.id!r}); known: {sorted(types)}")
            self.roles[node.id] = kind.role
            if kind.role != Role.LIMITS:
                self.agents[node.id] = build_agent(AgentSpec(type=node.type, name=node.name or node.id, config=node.config), None, env)
        self.hard_id = next(n.id for n in self.spec.nodes if self.roles[n.id] == Role.LIMITS)
        self.edges = self.spec.resolved_edges()
        self._check_order()
        self.node_runs = 0  # nodes run, over every cycle (benchmarks: framework time per node)
        self._count = threading.Lock()

    def _check_order(self) -> None:
        after = self._reachable(self.hard_id)
        for node_id, role in self.roles.items():
            if node_id in after and role not in _AFTER_LIMITS:
                raise AgentConfigError(
                    f"graph node {node_id!r} ({role.value}) follows the hard limits: only risk reviewers and validators may (they can only cut)"
                )
            if role in _AFTER_LIMITS and node_id not in after:
                raise AgentConfigError(f"graph node {node_id!r} ({role.value}) needs the hard limits before it (an edge path from {self.hard_id!r})")

    def _reachable(self, start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            current = todo.pop()
            for e in self.edges:
                if e.source == current and e.to != SPEC_END and e.to not in seen:
                    seen.add(e.to)
                    todo.append(e.to)
        return seen

    def compile(self, checkpointer: Checkpointer) -> Any:
        graph: StateGraph[GraphState, Any, GraphState, GraphState] = StateGraph(GraphState)
        for node_id, role in self.roles.items():
            graph.add_node(node_id, cast(Any, self._node(node_id, role)))  # langgraph types nodes by overloads
        by_source: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        for e in self.edges:
            by_source[e.source].append((e.to, e.when))
        for source, targets in by_source.items():
            graph.add_conditional_edges(_lg(source), _router(targets), [_lg(t) for t, _ in targets] + ([END] if all(t != SPEC_END for t, _ in targets) else []))
        return graph.compile(checkpointer=checkpointer, interrupt_before=[self.hard_id])

    def _node(self, node_id: str, role: Role) -> Callable[[GraphState, RunnableConfig], dict[str, Any]]:
        def run_node(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
            inputs: CycleInputs = config["configurable"]["quantlake"]
            symbol = state["symbol"]
            with self._count:
                self.node_runs += 1
            if role == Role.LIMITS:
                return dict(inputs.hard[symbol])  # the verdict the pipeline's code reached for this symbol
            ctx, run, agent = inputs.contexts[symbol], inputs.run, self.agents[node_id]
            notes = state.get("notes") or {}
            if role == Role.RESEARCH:
                return {"notes": agent.research(ctx, notes, run)}
            if role == Role.ANALYST:
                proposal = agent.plan(ctx, notes, _proposal(state), run) if hasattr(agent, "plan") else agent.propose(ctx, run)
                return {"proposal": proposal.model_dump(mode="json")}
            proposal = _proposal(state)
            assert proposal is not None  # _check_order: risk and validators come after the limits
            before = _assessment(state)
            if role == Role.RISK:
                soft = agent.review(ctx, proposal, before, run)
                return {"soft": soft.model_copy(update={"quantity": min(soft.quantity, before.quantity)}).model_dump(mode="json")}
            result: ValidationResult = agent.validate(ctx, proposal, before, run)
            if state.get("validation"):  # several validators: every one must pass
                prior = ValidationResult.model_validate(state["validation"])
                result = result.model_copy(update={"valid": prior.valid and result.valid, "issues": [*prior.issues, *result.issues]})
            return {"validation": result.model_dump(mode="json")}

        return run_node


def _lg(name: str) -> str:
    return START if name == SPEC_START else END if name == SPEC_END else name


def _router(targets: list[tuple[str, str | None]]) -> Callable[[GraphState], list[str]]:
    def route(state: GraphState) -> list[str]:
        chosen = [_lg(t) for t, when in targets if when is None or WHEN[when](state)]
        return chosen or [END]

    return route


def thread_id(pipeline: str, run_id: str, ctx: SymbolContext, book: str) -> str:
    """One thread per (cycle, symbol) and input: a rerun of the same cycle on the same input resumes it;
    a different input (new bar, position, portfolio) is a new thread, never an old answer."""
    digest = hashlib.sha256((json.dumps(ctx.model_dump(mode="json"), sort_keys=True) + book).encode()).hexdigest()[:20]
    return f"{pipeline}:{run_id}:{ctx.symbol}:{digest}"
