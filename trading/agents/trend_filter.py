"""A multi-timeframe rule: no new long against the higher timeframe's trend.

A risk reviewer (after the hard limits, it can only cut): a BUY that adds risk is rejected when the
last CLOSED bar of its timeframe (daily by default) closes below the mean of the last `window`
closes. Exits and covers always pass. The frame is point in time (`trading.context`): intraday, the
session's daily bar is not yet known, so the trend is yesterday's close against its mean.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trading.agents.base import AgentRun
from trading.agents.rules import reduces_position
from trading.context import SymbolContext
from trading.models import Action, RiskAssessment, TradeProposal


class TrendFilterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeframe: Literal["5m", "15m", "1h", "1d"] = Field("1d", description="The timeframe whose trend a new long must follow (read point in time).")
    window: int = Field(20, ge=2, le=500, description="Closes in the mean; the last closed bar must not be below it.")


class TrendFilter:
    """Rejects a risk-adding BUY when the frame's last close is below its `window`-bar mean."""

    def __init__(self, name: str, config: TrendFilterConfig | None = None) -> None:
        self.name = name
        self.config = config or TrendFilterConfig()

    @property
    def frames(self) -> dict[str, int]:
        """The timeframes this node reads and how many closed bars of each (the step reads no more)."""
        return {self.config.timeframe: self.config.window}

    def review(self, ctx: SymbolContext, proposal: TradeProposal, hard: RiskAssessment, run: AgentRun) -> RiskAssessment:
        if proposal.action != Action.BUY or reduces_position(proposal, ctx.position):
            return hard
        reason = self.blocks(ctx)
        if reason is None:
            return hard
        return hard.model_copy(update={"approved": False, "quantity": 0.0, "reasons": [*hard.reasons, reason]})

    def blocks(self, ctx: SymbolContext) -> str | None:
        """Why a new long is refused, or None when the trend allows it."""
        tf, window = self.config.timeframe, self.config.window
        view = ctx.frames.get(tf)
        closes = view.closes[-window:] if view is not None else []
        if len(closes) < window:  # unknown trend: no new risk on it
            return f"trend filter: {len(closes)} closed {tf} bars, {window} needed for the mean"
        mean = sum(closes) / window
        if closes[-1] < mean:
            return f"trend filter: last closed {tf} close {closes[-1]:.4g} is below its {window}-bar mean {mean:.4g}"
        return None


def frame_needs(agents: Iterable[object]) -> dict[str, int]:
    """timeframe -> closed bars the graph's nodes read (each node's `frames`, the largest count wins);
    empty when no node reads another timeframe (then nothing more is read)."""
    needs: dict[str, int] = {}
    for agent in agents:
        for tf, count in (getattr(agent, "frames", None) or {}).items():
            needs[tf] = max(needs.get(tf, 0), int(count))
    return needs
