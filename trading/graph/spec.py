"""A pipeline graph as a trader writes it: nodes from the catalog, edges, conditional skips.

```yaml
graph:
  nodes:
    - {id: analyst, type: llm_analyst, config: {model: gpt-4o-mini}}
    - {id: hard_limits, type: hard_limits, when: trade}   # skip (end) when the analyst holds
    - {id: risk, type: rules_risk, when: approved}         # skip when the hard limits rejected
    - {id: validator, type: rules_validator, when: approved}
  edges:            # optional: without it the nodes form a chain in list order
    - {from: analyst, to: hard_limits, when: trade}
```
A node's `when` guards the chain edge into it; an edge's `when` guards that edge. A guard that does
not hold ends the symbol's graph there (the symbol is then HOLD unless it passed every stage).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

START = "START"
END = "END"
HARD_LIMITS = "hard_limits"


def _latest(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return state.get("soft") or state.get("hard")


# Conditions an edge can carry; each reads only the graph's state.
WHEN: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "always": lambda s: True,
    # the proposal is a trade (not HOLD)
    "trade": lambda s: bool(s.get("proposal")) and s["proposal"]["action"] != "HOLD",
    # the hard limits approved it
    "hard_approved": lambda s: bool(s.get("hard")) and bool(s["hard"]["approved"]),
    # the latest assessment (soft review, else hard limits) approved a positive quantity
    "approved": lambda s: (a := _latest(s)) is not None and bool(a["approved"]) and a["quantity"] > 0,
    # no validator found an issue so far
    "valid": lambda s: not s.get("validation") or bool(s["validation"]["valid"]),
    # the bull/bear debate has rounds left (guard on bear -> bull), or is over (bear -> trader)
    "debating": lambda s: _debate_open(s),
    "debated": lambda s: not _debate_open(s),
}


def _debate_open(state: Mapping[str, Any]) -> bool:
    debate = (state.get("notes") or {}).get("debate")
    return debate is not None and debate["round"] < debate["rounds"]


def _check_when(value: str | None) -> str | None:
    if value is not None and value not in WHEN:
        raise ValueError(f"unknown condition {value!r}; known: {sorted(WHEN)}")
    return value


class NodeSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="The node's name in the graph (keys events and costs).")
    type: str = Field(description="A catalog type (`quantlake agents list`).")
    name: str | None = Field(None, description="The agent's name in events and costs; default: the id.")
    config: dict[str, Any] = Field(default_factory=dict)
    when: str | None = Field(None, description=f"Guard on the chain edge into this node: {', '.join(WHEN)}.")

    @model_validator(mode="after")
    def _known(self) -> NodeSpec:
        _check_when(self.when)
        if self.id in (START, END):
            raise ValueError(f"node id {self.id!r} is reserved")
        return self


class EdgeSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    to: str
    when: str | None = None

    @model_validator(mode="after")
    def _known(self) -> EdgeSpec:
        _check_when(self.when)
        return self


class GraphSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: list[NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] | None = None

    @model_validator(mode="after")
    def _shape(self) -> GraphSpec:
        ids = [n.id for n in self.nodes]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate node ids {dup}")
        if sum(n.type == HARD_LIMITS for n in self.nodes) > 1:
            raise ValueError("the hard limits appear once per graph")
        for e in self.edges or []:
            for end, name in (("from", e.source), ("to", e.to)):
                if name not in ids and name not in (START, END):
                    raise ValueError(f"edge {e.source} -> {e.to}: {end} names no node ({name!r}); nodes: {ids}")
        return self

    def with_hard_limits(self) -> GraphSpec:
        """The graph with the hard limits in it: a file that leaves them out gets them after its last
        node(s), guarded by `trade`: whatever the graph says, a trade passes them before it is decided."""
        if any(n.type == HARD_LIMITS for n in self.nodes):
            return self
        hard = NodeSpec(id=HARD_LIMITS, type=HARD_LIMITS, when="trade")
        if self.edges is None:
            return self.model_copy(update={"nodes": [*self.nodes, hard]})
        sources = {e.source for e in self.edges}
        tails = [n.id for n in self.nodes if n.id not in sources]
        edges = [e if e.to != END else e.model_copy(update={"to": HARD_LIMITS}) for e in self.edges]
        edges += [EdgeSpec(source=t, to=HARD_LIMITS, when="trade") for t in tails]
        return self.model_copy(update={"nodes": [*self.nodes, hard], "edges": edges})

    def resolved_edges(self) -> list[EdgeSpec]:
        if self.edges is not None:
            edges = list(self.edges)
            if not any(e.source == START for e in edges):
                edges.insert(0, EdgeSpec(source=START, to=self.nodes[0].id, when=self.nodes[0].when))
            return edges
        chain = [START, *(n.id for n in self.nodes)]
        whens = [n.when for n in self.nodes]
        return [EdgeSpec(source=a, to=b, when=w) for a, b, w in zip(chain[:-1], chain[1:], whens, strict=True)]


def mermaid(spec: GraphSpec) -> str:
    """The graph as a Mermaid flowchart (guards on the edges), for the catalog asset and the docs."""
    full = spec.with_hard_limits()
    types = {n.id: n.type for n in full.nodes}
    ends = {START: "begin((start))", END: "finish((end))"}  # `end` is a Mermaid keyword
    lines = ["flowchart LR"]
    lines += [f'    {i}["{i}: {t}"]' for i, t in types.items()]
    for e in full.resolved_edges():
        label = f"|{e.when}|" if e.when else ""
        lines.append(f"    {ends.get(e.source, e.source)} -->{label} {ends.get(e.to, e.to)}")
    return "\n".join(lines)


def default_graph(analyst: Mapping[str, Any], risk: Mapping[str, Any], validator: Mapping[str, Any]) -> GraphSpec:
    """Today's chain: analyst -> hard limits (a trade only) -> soft risk (if approved) -> validator (if approved)."""

    def node(id_: str, spec: Mapping[str, Any], when: str | None) -> NodeSpec:
        name = spec.get("name") or spec["type"]  # as before graphs: events and costs keep their names
        return NodeSpec(id=id_, type=spec["type"], name=name, config=dict(spec.get("config") or {}), when=when)

    return GraphSpec(
        nodes=[
            node("analyst", analyst, None),
            NodeSpec(id=HARD_LIMITS, type=HARD_LIMITS, when="trade"),
            node("risk", risk, "approved"),
            node("validator", validator, "approved"),
        ]
    )
