"""The research team's node types: technical analyst, bull and bear researchers debating N rounds,
a trader writing the plan, a risk debate (aggressive, neutral, conservative) and a portfolio manager.

Every node works offline with rules (deterministic, from the context's features); given `llm`
settings it asks a model through the same structured-output client as the other agents, and falls
back to its rules (a `fallback` event) when the model fails. A model node reads the timeframes its
`llm.frames` declares as the llm_* nodes do: the step reads them point in time (`frame_needs` sees the
node's `frames`), its prompt carries exactly those bars, and `quantlake estimate` counts their text. Notes are JSON in the graph's state, so
a checkpointed thread resumes mid-debate. The hard limits come after the graph, whatever it says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trading.agents.base import AgentRun
from trading.agents.chain import ProviderChain
from trading.agents.llm import LLMSettings, ModelFailure
from trading.agents.llm_agents import context_view, node_frames
from trading.context import SymbolContext
from trading.events import EventType
from trading.models import Action, TradeProposal

Stance = Literal["bullish", "bearish", "neutral"]
# How much the news analyst's tone (notes.news.score) moves the researchers' rule score, next to the technical score.
NEWS_WEIGHT = 0.5


class TeamNodeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    llm: LLMSettings | None = Field(None, description="Ask a model (structured output); none: the node's rules.")


class DebateConfig(TeamNodeConfig):
    rounds: int = Field(2, ge=1, le=10, description="Bull-bear rounds (each side speaks once a round).")


class PlanConfig(TeamNodeConfig):
    stop_atr: float = Field(2.0, gt=0)
    target1_atr: float = Field(2.0, gt=0)
    target2_atr: float = Field(4.0, gt=0)
    min_balance: float = Field(0.0, ge=-1, le=1, description="The debate's bull-minus-bear balance an entry needs.")


class ManagerConfig(TeamNodeConfig):
    min_keep: float = Field(0.25, ge=0, le=1, description="Below this kept share of the plan's size the manager holds.")


# -- structured outputs (OpenAI strict json_schema: every field required)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportOut(_Out):
    stance: Stance
    score: float = Field(ge=-1, le=1)
    summary: str


class ArgumentOut(_Out):
    argument: str
    conviction: float = Field(ge=0, le=1)


class VoiceOut(_Out):
    keep_fraction: float = Field(ge=0, le=1)
    argument: str


class DecisionOut(_Out):
    approve: bool
    rationale: str


def _messages(role: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": role}, {"role": "user", "content": json.dumps(payload, sort_keys=True, default=str)}]


class _TeamNode:
    """A node with an optional model: `ask` returns the model's answer, or None after a recorded fallback."""

    def __init__(self, name: str, caller: ProviderChain | None = None) -> None:
        self.name = name
        self.frames: dict[str, int] = {}  # rules read no other timeframe: none is read for them
        if caller is not None:  # rules only: no `caller`, so the pipeline neither counts nor prices the node
            self.caller = caller
            self.frames = node_frames(caller)

    def view(self, ctx: SymbolContext) -> dict[str, Any]:
        """The context as this node's prompt shows it: its declared frames only (none declared: as before)."""
        return context_view(ctx, self.frames)

    def ask(self, schema: type[Any], role: str, payload: dict[str, Any], ctx: SymbolContext, run: AgentRun) -> Any:
        """A node whose prompt shows no context (the manager, the news analyst) gets its declared frames beside its payload."""
        caller: ProviderChain | None = getattr(self, "caller", None)
        if caller is None:
            return None
        if self.frames and "context" not in payload and "frames" not in payload and (framed := ctx.prompt_view(self.frames).get("frames")):
            payload = {**payload, "frames": framed}
        try:
            return caller.call(schema, _messages(role, payload), ctx, run)
        except ModelFailure as failure:
            step: dict[str, object] = {"agent": self.name, "kind": failure.kind, "detail": failure.detail, "to": "rules"}
            run.emit(EventType.FALLBACK, ctx, step)
            return None


def _technical(ctx: SymbolContext) -> tuple[float, list[str]]:
    """A score in [-1, 1] from trend, momentum and the signal's direction, with the points behind it."""
    f = ctx.features
    points: list[tuple[float, str]] = []
    for fast, slow, weight, what in (("sma_20", "sma_50", 0.4, ""), ("ema_12", "ema_26", 0.3, " (MACD sign)")):
        a, b = f.get(fast), f.get(slow)
        if a is None or b is None:
            continue  # not warmed up yet
        up = a > b
        points.append((weight if up else -weight, f"{fast} {'above' if up else 'below'} {slow}{what}"))
    rsi = f.get("rsi_14")
    if rsi is not None:
        if rsi > 70:
            points.append((-0.2, f"RSI {rsi:.0f}: overbought"))
        elif rsi < 30:
            points.append((0.2, f"RSI {rsi:.0f}: oversold"))
    if ctx.wants:
        points.append((0.3 if ctx.wants == "BUY" else -0.3, f"{ctx.strategy} signals {ctx.wants}"))
    score = max(-1.0, min(1.0, sum(p for p, _ in points)))
    return score, [text for _, text in points]


class TechnicalAnalyst(_TeamNode):
    ROLE = "You are a technical analyst. Read the bars and indicators and report a stance, a score in [-1, 1] and a summary."

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        score, points = _technical(ctx)
        out = self.ask(ReportOut, self.ROLE, self.view(ctx), ctx, run)
        if out is not None:
            return {"technical": {"stance": out.stance, "score": out.score, "summary": out.summary, "by": "model"}}
        stance: Stance = "bullish" if score > 0.1 else "bearish" if score < -0.1 else "neutral"
        return {"technical": {"stance": stance, "score": score, "summary": "; ".join(points), "by": "rules"}}


class Researcher(_TeamNode):
    """One side of the debate; the bull opens each round, the bear answers. `rounds` (the bull's) bounds it."""

    def __init__(self, name: str, side: Literal["bull", "bear"], rounds: int, caller: ProviderChain | None = None) -> None:
        super().__init__(name, caller)
        self.side = side
        self.rounds = rounds
        self.calls_per_symbol = rounds  # one turn a round

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        debate = dict(notes.get("debate") or {"rounds": self.rounds, "round": 0, "turns": []})
        if self.side == "bull":
            debate["round"] += 1
        turn_round = debate["round"]
        technical = notes.get("technical") or {}
        role = f"You are the {self.side} researcher in round {turn_round} of {debate['rounds']}. Argue your side against the last argument; give a conviction in [0, 1]."
        news = notes.get("news")
        payload = {"context": self.view(ctx), "technical": technical, "turns": debate["turns"]}
        if news:  # only with a news node: news-free prompts stay as they were
            payload["news"] = news
        out = self.ask(ArgumentOut, role, payload, ctx, run)
        if out is not None:
            argument, conviction, by = out.argument, out.conviction, "model"
        else:
            tech = float(technical.get("score", 0.0))
            tone = float((news or {}).get("score", 0.0))
            score = max(-1.0, min(1.0, tech + NEWS_WEIGHT * tone))
            mine = score if self.side == "bull" else -score
            conviction = round(max(0.05, min(0.95, 0.5 + mine / 2)), 4)
            argument = f"{self.side} round {turn_round}: technical score {tech:+.2f} ({technical.get('summary', 'no report')})"
            if news:
                argument += f"; news tone {tone:+.2f} ({news.get('summary', '')})"
            by = "rules"
        debate["turns"] = [*debate["turns"], {"side": self.side, "round": turn_round, "argument": argument, "conviction": conviction, "by": by}]
        bull = [t["conviction"] for t in debate["turns"] if t["side"] == "bull"]
        bear = [t["conviction"] for t in debate["turns"] if t["side"] == "bear"]
        debate["balance"] = round((sum(bull) / len(bull) if bull else 0.0) - (sum(bear) / len(bear) if bear else 0.0), 6)
        return {"debate": debate}


class Trader(_TeamNode):
    """Writes the trade plan: the signal's side if the debate supports it, entry at the close, a stop and two targets."""

    ROLE = "You are the trader. From the reports and the debate, approve the signalled trade or not, with a rationale."

    def __init__(self, name: str, config: PlanConfig, caller: ProviderChain | None = None) -> None:
        super().__init__(name, caller)
        self.config = config

    def plan(self, ctx: SymbolContext, notes: Mapping[str, Any], proposal: TradeProposal | None, run: AgentRun) -> TradeProposal:
        c = self.config
        want = ctx.wants
        debate = notes.get("debate") or {}
        balance = float(debate.get("balance", 0.0))
        out = self.ask(DecisionOut, self.ROLE, {"context": self.view(ctx), "notes": dict(notes)}, ctx, run)
        sign = 1.0 if want == "BUY" else -1.0
        approve = out.approve if out is not None else want is not None and sign * balance >= c.min_balance
        why = out.rationale if out is not None else f"debate balance {balance:+.2f} over {debate.get('rounds', 0)} rounds"
        memory = notes.get("memory") or {}
        if out is None and memory.get("reflections"):  # the rules cite what the symbol's past trades taught
            why += f"; memory: {memory.get('summary', '')}"
        if want is None or not approve:
            return TradeProposal(symbol=ctx.symbol, action=Action.HOLD, confidence=1.0, rationale=f"trader: {why}")
        if (want == "SELL" and ctx.position > 0) or (want == "BUY" and ctx.position < 0):  # an exit: no levels
            return TradeProposal(symbol=ctx.symbol, action=Action(want), confidence=1.0, rationale=f"trader: exit; {why}", entry=ctx.close)
        atr = ctx.features.get("atr_14") or ctx.close * 0.02
        price = ctx.close
        return TradeProposal(
            symbol=ctx.symbol,
            action=Action(want),
            confidence=round(max(0.0, min(1.0, 0.5 + sign * balance / 2)), 4),
            rationale=f"trader: {why}",
            entry=price,
            stop=max(price - sign * c.stop_atr * atr, 1e-9),
            target1=max(price + sign * c.target1_atr * atr, 1e-9),
            target2=max(price + sign * c.target2_atr * atr, 1e-9),
        )


VOICES: dict[str, float] = {"aggressive": 1.0, "neutral": 0.75, "conservative": 0.5}


class RiskDebate(_TeamNode):
    """Three voices on the plan's size; the kept share is their median (the neutral voice's, by rules)."""

    calls_per_symbol = len(VOICES)

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        vol = ctx.features.get("vol_20") or 0.0
        voices = []
        for voice, keep in VOICES.items():
            role = f"You are the {voice} risk analyst. Say which share of the planned size to keep, in [0, 1], and why."
            out = self.ask(VoiceOut, role, {"context": self.view(ctx), "notes": dict(notes)}, ctx, run)
            if out is not None:
                voices.append({"voice": voice, "keep": out.keep_fraction, "argument": out.argument, "by": "model"})
            else:
                damped = keep if vol <= 0.03 else keep * 0.5  # a volatile name: every voice halves
                voices.append({"voice": voice, "keep": damped, "argument": f"{voice}: daily vol {vol:.3f}", "by": "rules"})
        keeps = sorted(v["keep"] for v in voices)
        return {"risk_debate": {"voices": voices, "keep": keeps[len(keeps) // 2]}}


class PortfolioManager(_TeamNode):
    """The last word before the hard limits: approves the plan (or holds) from the risk debate."""

    ROLE = "You are the portfolio manager. Approve the trader's plan or not, given the risk debate, with a rationale."

    def __init__(self, name: str, config: ManagerConfig, caller: ProviderChain | None = None) -> None:
        super().__init__(name, caller)
        self.config = config

    def plan(self, ctx: SymbolContext, notes: Mapping[str, Any], proposal: TradeProposal | None, run: AgentRun) -> TradeProposal:
        if proposal is None or proposal.action == Action.HOLD:
            return proposal or TradeProposal(symbol=ctx.symbol, action=Action.HOLD, confidence=1.0, rationale="manager: no plan")
        keep = float((notes.get("risk_debate") or {}).get("keep", 1.0))
        out = self.ask(DecisionOut, self.ROLE, {"plan": proposal.model_dump(mode="json"), "notes": dict(notes)}, ctx, run)
        approve = out.approve if out is not None else keep >= self.config.min_keep
        why = out.rationale if out is not None else f"risk debate keeps {keep:.2f}"
        if not approve:
            return TradeProposal(symbol=ctx.symbol, action=Action.HOLD, confidence=1.0, rationale=f"manager: {why}")
        return proposal.model_copy(update={"rationale": f"{proposal.rationale}; manager: {why}"})


TEAM_PIPELINE: dict[str, Any] = {
    "name": "team",
    "graph": {
        "nodes": [
            {"id": "technical", "type": "technical_analyst"},
            {"id": "news", "type": "news_analyst"},
            {"id": "memory", "type": "reflection"},
            {"id": "bull", "type": "bull_researcher", "config": {"rounds": 2}},
            {"id": "bear", "type": "bear_researcher", "config": {"rounds": 2}},
            {"id": "trader", "type": "trader"},
            {"id": "risk_debate", "type": "risk_debate"},
            {"id": "manager", "type": "portfolio_manager"},
            {"id": "hard_limits", "type": "hard_limits"},
        ],
        "edges": [
            {"from": "START", "to": "technical"},
            {"from": "technical", "to": "news"},
            {"from": "news", "to": "memory"},
            {"from": "memory", "to": "bull"},
            {"from": "bull", "to": "bear"},
            {"from": "bear", "to": "bull", "when": "debating"},
            {"from": "bear", "to": "trader", "when": "debated"},
            {"from": "trader", "to": "risk_debate", "when": "trade"},
            {"from": "risk_debate", "to": "manager"},
            {"from": "manager", "to": "hard_limits", "when": "trade"},
        ],
    },
}
"""The built-in team pipeline (rules offline; give a node `llm` settings to ask a model)."""
