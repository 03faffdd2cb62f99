"""Agents are registered types: a name, a role, a cost class and a config model (its JSON schema).

The registry is also the catalog of graph node types (trading/graph): what each node reads from the
graph's state (inputs), what it writes (outputs), which data it looks at, and what it costs.

A pipeline names agents by type in config; `build_agent` validates the config at load and builds
the agent. User agents register through the `quantlake.agents` entry-point group: the entry point
is an `AgentType`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trading.agents.base import CostClass, Role
from trading.agents.cache import CacheMode, ResponseCache
from trading.agents.chain import ProviderChain
from trading.agents.llm import FormatMemory, LLMSettings, StructuredCaller
from trading.agents.llm_agents import LLMAnalyst, LLMRiskReviewer, LLMValidator
from trading.agents.news_analyst import NewsAnalyst, NewsConfig
from trading.agents.reflection import ReflectionConfig, ReflectionMemory
from trading.agents.rules import (
    RuleAnalyst,
    RuleAnalystConfig,
    RuleRiskConfig,
    RuleRiskReviewer,
    RuleValidator,
)
from trading.agents.team import (
    DebateConfig,
    ManagerConfig,
    PlanConfig,
    PortfolioManager,
    Researcher,
    RiskDebate,
    TeamNodeConfig,
    TechnicalAnalyst,
    Trader,
)
from trading.agents.trend_filter import TrendFilter, TrendFilterConfig
from trading.cost import PriceTable


class AgentConfigError(ValueError):
    """A pipeline names an agent that does not exist, in the wrong role, or with bad settings."""


class _NoConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class BuildEnv:
    prices: PriceTable
    cache: ResponseCache | None = None
    formats: FormatMemory | None = None  # None: the process-wide memory


# What a node of each role reads from and writes to the graph's state, unless its type says otherwise.
ROLE_IO: dict[Role, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Role.ANALYST: (("context", "notes"), ("proposal",)),
    Role.RESEARCH: (("context", "notes"), ("notes",)),
    Role.LIMITS: (("proposal", "portfolio"), ("proposal.quantity", "hard")),
    Role.RISK: (("context", "proposal", "hard"), ("soft",)),
    Role.VALIDATOR: (("context", "proposal", "soft"), ("validation",)),
}


@dataclass(frozen=True)
class AgentType:
    name: str
    role: Role
    cost_class: CostClass
    config_model: type[BaseModel]
    factory: Callable[[str, Any, BuildEnv], Any]
    description: str = ""
    reads: tuple[str, ...] = ("signal", "features", "recent_bars", "position")  # the data behind `context`
    inputs: tuple[str, ...] | None = None  # None: the role's (ROLE_IO)
    outputs: tuple[str, ...] | None = None

    def config_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema()

    def metadata(self) -> dict[str, Any]:
        inputs, outputs = ROLE_IO[self.role]
        return {
            "type": self.name,
            "role": self.role.value,
            "cost_class": self.cost_class.value,
            "inputs": list(self.inputs or inputs),
            "outputs": list(self.outputs or outputs),
            "reads": list(self.reads),
            "description": self.description,
            "config_schema": self.config_schema(),
        }


class AgentSpec(BaseModel):
    """One agent of a pipeline, as written in config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    name: str | None = None  # defaults to the type's name; names key costs and events
    config: dict[str, Any] = Field(default_factory=dict)


def _caller(name: str, cfg: LLMSettings, env: BuildEnv) -> ProviderChain:
    """The agent's provider, then its fallbacks; an unknown model runs unpriced, tokens counted."""
    providers = cfg.chain()
    if env.cache is None or env.cache.mode != CacheMode.REPLAY:
        for settings in providers:
            settings.api_key()  # a missing key fails at load; a replay needs no model at all
    return ProviderChain(name, [StructuredCaller(name, s, env.prices, env.cache, env.formats) for s in providers])


BUILTIN_AGENTS: dict[str, AgentType] = {
    t.name: t
    for t in (
        AgentType("rules_analyst", Role.ANALYST, CostClass.FREE, RuleAnalystConfig, lambda n, c, e: RuleAnalyst(c), "Strategy signal with ATR levels."),
        AgentType("rules_risk", Role.RISK, CostClass.FREE, RuleRiskConfig, lambda n, c, e: RuleRiskReviewer(c), "Rejects low confidence."),
        AgentType("rules_validator", Role.VALIDATOR, CostClass.FREE, _NoConfig, lambda n, c, e: RuleValidator(), "Checks level order."),
        AgentType("llm_analyst", Role.ANALYST, CostClass.MODEL, LLMSettings, lambda n, c, e: LLMAnalyst(n, _caller(n, c, e)), "Model judges the signal."),
        AgentType("llm_risk", Role.RISK, CostClass.MODEL, LLMSettings, lambda n, c, e: LLMRiskReviewer(n, _caller(n, c, e)), "Model soft risk review."),
        AgentType("llm_validator", Role.VALIDATOR, CostClass.MODEL, LLMSettings, lambda n, c, e: LLMValidator(n, _caller(n, c, e)), "Model final check."),
        AgentType(
            "hard_limits",
            Role.LIMITS,
            CostClass.FREE,
            _NoConfig,
            lambda n, c, e: None,
            "Price sanity, sizing and the hard risk limits, as code, in symbol order on a running portfolio; in every graph (appended at the end when a file leaves it out).",
            reads=("portfolio", "limits", "close", "atr_14"),
        ),
    )
}


def _model(name: str, cfg: TeamNodeConfig, env: BuildEnv) -> ProviderChain | None:
    return _caller(name, cfg.llm, env) if cfg.llm is not None else None


_TEAM_READS = ("signal", "features", "recent_bars", "position", "notes")
TEAM_AGENTS: tuple[AgentType, ...] = (
    AgentType("technical_analyst", Role.RESEARCH, CostClass.FREE, TeamNodeConfig, lambda n, c, e: TechnicalAnalyst(n, _model(n, c, e)),
              "Team: trend, momentum and signal into a stance and score (notes.technical); a model with `llm`.", outputs=("notes.technical",)),
    AgentType("bull_researcher", Role.RESEARCH, CostClass.FREE, DebateConfig, lambda n, c, e: Researcher(n, "bull", c.rounds, _model(n, c, e)),
              "Team: opens each debate round for the trade (notes.debate); loop with bear_researcher via when: debating.", reads=_TEAM_READS, outputs=("notes.debate",)),
    AgentType("bear_researcher", Role.RESEARCH, CostClass.FREE, DebateConfig, lambda n, c, e: Researcher(n, "bear", c.rounds, _model(n, c, e)),
              "Team: answers each round against the trade (notes.debate).", reads=_TEAM_READS, outputs=("notes.debate",)),
    AgentType("trader", Role.ANALYST, CostClass.FREE, PlanConfig, lambda n, c, e: Trader(n, c, _model(n, c, e)),
              "Team: writes the plan (side, entry, stop, two targets, confidence) from the debate.", reads=_TEAM_READS),
    AgentType("risk_debate", Role.RESEARCH, CostClass.FREE, TeamNodeConfig, lambda n, c, e: RiskDebate(n, _model(n, c, e)),
              "Team: aggressive, neutral and conservative voices on the plan's size (notes.risk_debate).", reads=_TEAM_READS, outputs=("notes.risk_debate",)),
    AgentType("portfolio_manager", Role.ANALYST, CostClass.FREE, ManagerConfig, lambda n, c, e: PortfolioManager(n, c, _model(n, c, e)),
              "Team: approves the plan or holds, from the risk debate; the hard limits follow.", reads=_TEAM_READS),
)
BUILTIN_AGENTS.update({t.name: t for t in TEAM_AGENTS})
BUILTIN_AGENTS["news_analyst"] = AgentType(
    "news_analyst", Role.RESEARCH, CostClass.FREE, NewsConfig, lambda n, c, e: NewsAnalyst(n, c, _model(n, c, e)),
    "Team: tone of the symbol's headlines up to the decision time (notes.news; lexicon, a model with `llm`); moves the debate.",
    reads=("headlines", "notes"), outputs=("notes.news",),
)
BUILTIN_AGENTS["reflection"] = AgentType(
    "reflection", Role.RESEARCH, CostClass.FREE, ReflectionConfig, lambda n, c, e: ReflectionMemory(n, c, _model(n, c, e)),
    "Team memory: the symbol's last `last` reflections on closed positions, up to the decision time (notes.memory); "
    "a position's close writes one (rules, a model with `llm`).",
    reads=("reflections", "notes"), outputs=("notes.memory",),
)

BUILTIN_AGENTS["trend_filter"] = AgentType(
    "trend_filter", Role.RISK, CostClass.FREE, TrendFilterConfig, lambda n, c, e: TrendFilter(n, c),
    "Multi-timeframe: rejects a new long when the last closed bar of `timeframe` (1d) closes below its `window`-bar mean; "
    "reads only bars closed by the decision bar's close (intraday, not the session's daily bar).",
    reads=("frames", "position"),
)


AGENT_ENTRY_POINT_GROUP = "quantlake.agents"


@cache
def entry_points(group: str) -> tuple[metadata.EntryPoint, ...]:
    """The group's entry points, read once per process: a scan reads every installed package's
    metadata, and graphs look agent types up at every build. `refresh()` reads them again."""
    return tuple(metadata.entry_points(group=group))


def refresh() -> None:
    """Forget the entry points read so far: the next lookup sees packages installed since."""
    entry_points.cache_clear()


def agent_types() -> dict[str, AgentType]:
    """Built-ins plus plugins from the `quantlake.agents` entry-point group."""
    found = dict(BUILTIN_AGENTS)
    for ep in entry_points(group=AGENT_ENTRY_POINT_GROUP):
        plugin = ep.load()
        if not isinstance(plugin, AgentType):
            raise AgentConfigError(f"entry point {ep.name!r} ({ep.value}) is not an AgentType")
        found[plugin.name] = plugin
    return found


def catalog() -> list[dict[str, Any]]:
    """Every node type a pipeline graph can use (built-ins, team, plugins), with metadata and config schema."""
    return [t.metadata() for _, t in sorted(agent_types().items())]


def catalog_markdown(types: list[dict[str, Any]] | None = None) -> str:
    rows = ["| type | role | cost | inputs | outputs | reads | description |", "|---|---|---|---|---|---|---|"]
    for t in types if types is not None else catalog():
        cells = [t["type"], t["role"], t["cost_class"], ", ".join(t["inputs"]), ", ".join(t["outputs"]), ", ".join(t["reads"]), t["description"]]
        rows.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def build_agent(spec: AgentSpec, role: Role | None, env: BuildEnv) -> Any:
    """The agent `spec` names; `role`: the role its place in the pipeline requires (None: any)."""
    types = agent_types()
    kind = types.get(spec.type)
    if kind is None:
        raise AgentConfigError(f"unknown agent type {spec.type!r}; known: {sorted(types)}")
    if role is not None and kind.role != role:
        raise AgentConfigError(f"agent {spec.type!r} is a {kind.role.value} agent, not a {role.value} agent")
    try:
        config = kind.config_model.model_validate(spec.config)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) + f": {err['msg']}" for err in exc.errors())
        raise AgentConfigError(f"agent {spec.name or spec.type!r} ({spec.type}): bad config: {fields}") from None
    try:
        return kind.factory(spec.name or spec.type, config, env)
    except ValueError as exc:  # e.g. a missing API key
        raise AgentConfigError(f"agent {spec.name or spec.type!r} ({spec.type}): {exc}") from None


ROLES = (Role.ANALYST, Role.RISK, Role.VALIDATOR)


def expect_roles(specs: dict[Role, AgentSpec]) -> None:
    """The three-key pipeline format: each slot holds an agent of its role."""
    types = agent_types()
    for role, spec in specs.items():
        kind = types.get(spec.type)
        if kind is not None and kind.role != role:
            raise AgentConfigError(f"agent {spec.type!r} is a {kind.role.value} agent, not a {role.value} agent")


def fill_model_defaults(raw: dict[str, Any], *, model: str | None = None, base_url: str | None = None) -> dict[str, Any]:
    """A pipeline mapping (as read from a file) with `model` / `base_url` filled in where it leaves them open.

    What the file says is never replaced: an analyst it does not name becomes the model analyst on
    `model`; every model agent it names (a type configured by `LLMSettings`) gets `model` and
    `base_url` only for the keys its config lacks, so its `timeout_s`, `max_retries`, ... stay.
    """
    out = dict(raw)
    graph = out.get("graph")
    if model and Role.ANALYST.value not in out and not isinstance(graph, dict):
        out[Role.ANALYST.value] = {"type": "llm_analyst", "config": {}}
    for role in ROLES:
        if role.value in out:
            out[role.value] = _filled(out[role.value], model, base_url)
    if isinstance(graph, dict) and isinstance(graph.get("nodes"), list):  # a graph file: its model nodes too
        out["graph"] = {**graph, "nodes": [_filled(n, model, base_url) for n in graph["nodes"]]}
    return out


def _filled(spec: Any, model: str | None, base_url: str | None) -> Any:
    if not isinstance(spec, dict):
        return spec
    kind = agent_types().get(str(spec.get("type")))
    if kind is None or not issubclass(kind.config_model, LLMSettings):
        return spec
    config = dict(spec.get("config") or {})
    if model:
        config.setdefault("model", model)
    if base_url:
        config.setdefault("base_url", base_url)
    return {**spec, "config": config}
