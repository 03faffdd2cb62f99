"""Price sanity, a hard limit on a model's levels: an absurd price never reaches a broker.

Checked against the market (the last price), not the proposal's own entry, and against the
strategy's own levels: the entry within a band of the last price and of the strategy's entry level
(the close it signalled at); the stop on the losing side of the market, the targets on the winning
side and in order; every level within a multiple of ATR of the last price, and within a (smaller)
multiple of ATR of the strategy's level of the same name when it set one. A violation turns the
proposal into HOLD with the reasons; nothing is clipped or repaired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from trading.models import Action, TradeProposal


class SanityLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_band_pct: float = Field(0.05, gt=0, description="Entry at most this far from the last price and from the strategy's entry (0.05 = 5 %).")
    max_atr_multiple: float = Field(10.0, gt=0, description="Stop and targets at most this many ATRs from the last price.")
    strategy_atr_multiple: float = Field(5.0, gt=0, description="Stop and targets at most this many ATRs from the strategy's own level of the same name.")


@dataclass(frozen=True)
class StrategyLevels:
    """What the strategy itself proposed at the decision bar (None: it set no such level)."""

    entry: float | None = None
    stop: float | None = None
    target1: float | None = None
    target2: float | None = None


def price_sanity(
    proposal: TradeProposal, last_price: float, atr: float | None, limits: SanityLimits, strategy: StrategyLevels | None = None
) -> list[str]:
    """What is wrong with the proposal's levels against the market and the strategy; empty when they are sane."""
    if proposal.action == Action.HOLD:
        return []
    buy = proposal.action == Action.BUY
    name = f"{proposal.symbol} {proposal.action.value}"
    own = strategy or StrategyLevels()
    issues: list[str] = []
    for ref, label in ((last_price, "the last price"), (own.entry, "the strategy's entry")):
        if proposal.entry is None or ref is None or not _usable(ref):
            continue
        off = abs(proposal.entry / ref - 1)
        if off > limits.entry_band_pct:
            issues.append(f"{name}: entry {proposal.entry:.6g} is {off:.1%} from {label} {ref:.6g} (band {limits.entry_band_pct:.1%})")
    if proposal.stop is not None and (proposal.stop >= last_price if buy else proposal.stop <= last_price):
        issues.append(f"{name}: stop {proposal.stop:.6g} is not on the losing side of the last price {last_price:.6g}")
    targets: list[tuple[str, float]] = [(k, v) for k, v in (("target1", proposal.target1), ("target2", proposal.target2)) if v is not None]
    for key, value in targets:
        if value <= last_price if buy else value >= last_price:
            issues.append(f"{name}: {key} {value:.6g} is not on the winning side of the last price {last_price:.6g}")
    if proposal.target1 is not None and proposal.target2 is not None and (proposal.target2 < proposal.target1 if buy else proposal.target2 > proposal.target1):
        issues.append(f"{name}: target2 {proposal.target2:.6g} comes before target1 {proposal.target1:.6g}")
    if atr is not None and math.isfinite(atr) and atr > 0:
        placed = [("stop", proposal.stop)] if proposal.stop is not None else []
        for key, value in [*placed, *targets]:
            if abs(value - last_price) > limits.max_atr_multiple * atr:
                issues.append(f"{name}: {key} {value:.6g} is {abs(value - last_price) / atr:.1f} ATR from the last price {last_price:.6g} (at most {limits.max_atr_multiple:g})")
            ref = getattr(own, key)
            if _usable(ref) and abs(value - ref) > limits.strategy_atr_multiple * atr:
                issues.append(f"{name}: {key} {value:.6g} is {abs(value - ref) / atr:.1f} ATR from the strategy's {key} {ref:.6g} (at most {limits.strategy_atr_multiple:g})")
    return issues


def _usable(level: float | None) -> bool:
    return level is not None and math.isfinite(level) and level > 0
