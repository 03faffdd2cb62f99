"""Agents are registered types: a name, a role, a cost class and a config model (its JSON schema).

A pipeline names agents by type in config; `build_agent` validates the config at load and builds
the agent. User agents register through the `quantlake.agents` entry-point group: the entry point
is an `AgentType`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trading.agents.base import CostClass, Role
from trading.agents.cache import CacheMode, ResponseCache
from trading.agents.chain import ProviderChain
from trading.agents.llm import FormatMemory, LLMSettings, StructuredCaller
from trading.agents.llm_agents import LLMAnalyst, LLMRiskReviewer, LLMValidator
from trading.agents.rules import (
    RuleAnalyst,
    RuleAnalystConfig,
    RuleRiskConfig,
    RuleRiskReviewer,
    RuleValidator,
)
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


@dataclass(frozen=True)
class AgentType:
    name: str
    role: Role
    cost_class: CostClass
    config_model: type[BaseModel]
    factory: Callable[[str, Any, BuildEnv], Any]
    description: str = ""

    def config_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema()


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
    )
}


def agent_types() -> dict[str, AgentType]:
    """Built-ins plus plugins from the `quantlake.agents` entry-point group."""
    found = dict(BUILTIN_AGENTS)
    for ep in entry_points(group="quantlake.agents"):
        plugin = ep.load()
        if not isinstance(plugin, AgentType):
            raise AgentConfigError(f"entry point {ep.name!r} ({ep.value}) is not an AgentType")
        found[plugin.name] = plugin
    return found


def build_agent(spec: AgentSpec, role: Role, env: BuildEnv) -> Any:
    types = agent_types()
    kind = types.get(spec.type)
    if kind is None:
        raise AgentConfigError(f"unknown agent type {spec.type!r}; known: {sorted(types)}")
    if kind.role != role:
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


def fill_model_defaults(raw: dict[str, Any], *, model: str | None = None, base_url: str | None = None) -> dict[str, Any]:
    """A pipeline mapping (as read from a file) with `model` / `base_url` filled in where it leaves them open.

    What the file says is never replaced: an analyst it does not name becomes the model analyst on
    `model`; every model agent it names (a type configured by `LLMSettings`) gets `model` and
    `base_url` only for the keys its config lacks, so its `timeout_s`, `max_retries`, ... stay.
    """
    out = dict(raw)
    if model and Role.ANALYST.value not in out:
        out[Role.ANALYST.value] = {"type": "llm_analyst", "config": {}}
    known = agent_types()
    for role in ROLES:
        spec = out.get(role.value)
        if not isinstance(spec, dict):
            continue
        kind = known.get(str(spec.get("type")))
        if kind is None or not issubclass(kind.config_model, LLMSettings):
            continue
        config = dict(spec.get("config") or {})
        if model:
            config.setdefault("model", model)
        if base_url:
            config.setdefault("base_url", base_url)
        out[role.value] = {**spec, "config": config}
    return out
