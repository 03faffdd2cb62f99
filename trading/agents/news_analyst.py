"""The team's news/sentiment analyst: a score in [-1, 1] from the symbol's headlines.

Offline it scores headlines with a small word lexicon; given `llm` settings it asks a model through
the team's structured-output client (falling back to the lexicon). It reads only the context's
`headlines` stamped at or before the decision time and inside its lookback: the caller fills the
context from the news lake point in time, and the node checks again, so a late headline never counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from trading.agents.base import AgentRun
from trading.agents.chain import ProviderChain
from trading.agents.team import ReportOut, Stance, TeamNodeConfig, _TeamNode
from trading.context import SymbolContext

# Small on purpose: a rough, explainable tone; a model does the nuance.
POSITIVE = frozenset(
    ["beat", "beats", "surge", "surges", "soar", "soars", "jump", "jumps", "rally", "rallies", "gain", "gains", "rise", "rises", "record", "upgrade", "upgraded", "upgrades", "strong", "growth", "profit", "profits", "outperform", "bullish", "raise", "raises", "raised", "boost", "boosts", "wins", "win", "approval", "approved", "expands"]
)
NEGATIVE = frozenset(
    ["miss", "misses", "plunge", "plunges", "fall", "falls", "drop", "drops", "slump", "slumps", "loss", "losses", "downgrade", "downgraded", "downgrades", "weak", "lawsuit", "probe", "recall", "cut", "cuts", "bearish", "warn", "warns", "warning", "decline", "declines", "layoffs", "fraud", "delay", "delays", "halt"]
)
_WORD = re.compile(r"[a-z]+")


class NewsConfig(TeamNodeConfig):
    lookback_hours: float = Field(72.0, gt=0, le=24 * 30, description="Headlines this recent (before the decision time) count.")
    max_headlines: int = Field(20, ge=1, le=200, description="The newest this many go to the lexicon or the model.")


def headline_score(text: str) -> float:
    """(positive - negative) / (positive + negative) words of one headline; 0 when it has none."""
    words = _WORD.findall(text.lower())
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def visible_headlines(ctx: SymbolContext, lookback: timedelta, limit: int) -> list[dict[str, Any]]:
    """The context's headlines in [as_of - lookback, as_of], newest `limit`, oldest first."""
    since = ctx.as_of - lookback
    seen = [h for h in ctx.headlines if isinstance(h.get("created_at"), datetime) and since <= h["created_at"] <= ctx.as_of]
    return sorted(seen, key=lambda h: h["created_at"])[-limit:]


class NewsAnalyst(_TeamNode):
    ROLE = "You are a news and sentiment analyst. Read the headlines and report a stance, a score in [-1, 1] and a summary."

    def __init__(self, name: str, config: NewsConfig, caller: ProviderChain | None = None) -> None:
        super().__init__(name, caller)
        self.config = config

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        shown = visible_headlines(ctx, timedelta(hours=self.config.lookback_hours), self.config.max_headlines)
        if not shown:  # nothing to read: no model call, a neutral note
            return {"news": {"stance": "neutral", "score": 0.0, "headlines": 0, "summary": "no headlines", "by": "rules"}}
        view = _headline_view(shown)
        out = self.ask(ReportOut, self.ROLE, {"symbol": ctx.symbol, "as_of": ctx.as_of.isoformat(), "headlines": view}, ctx, run)
        if out is not None:
            return {"news": {"stance": out.stance, "score": out.score, "headlines": len(shown), "summary": out.summary, "by": "model"}}
        scores = [headline_score(str(h.get("headline", ""))) for h in shown]
        score = round(sum(scores) / len(scores), 6)
        stance: Stance = "bullish" if score > 0.1 else "bearish" if score < -0.1 else "neutral"
        summary = f"{len(shown)} headlines, lexicon tone {score:+.2f}"
        return {"news": {"stance": stance, "score": score, "headlines": len(shown), "summary": summary, "by": "rules"}}


def _headline_view(headlines: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"created_at": h["created_at"].isoformat(), "headline": str(h.get("headline", "")), "source": str(h.get("source") or "")} for h in headlines]
