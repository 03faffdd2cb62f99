"""Price sanity, a hard limit on a model's levels: an absurd price never reaches a broker.

Checked against the market (the decision bar's close), not the proposal's own entry: the entry
within a band of the last price, the stop on the losing side of the market, the targets on the
winning side and in order, every level within a multiple of ATR of the last price. A violation turns
the proposal into HOLD with the reasons; nothing is clipped or repaired.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from trading.models import Action, TradeProposal


class SanityLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_band_pct: float = Field(0.05, gt=0, description="Entry at most this far from the last price (0.05 = 5 %).")
    max_atr_multiple: float = Field(10.0, gt=0, description="Stop and targets at most this many ATRs from the last price.")


def price_sanity(proposal: TradeProposal, last_price: float, atr: float | None, limits: SanityLimits) -> list[str]:
    """What is wrong with the proposal's levels against the market; empty when they are sane."""
    if proposal.action == Action.HOLD:
        return []
    buy = proposal.action == Action.BUY
    name = f"{proposal.symbol} {proposal.action.value}"
    issues: list[str] = []
    if proposal.entry is not None and abs(proposal.entry / last_price - 1) > limits.entry_band_pct:
        issues.append(f"{name}: entry {proposal.entry:.6g} is {abs(proposal.entry / last_price - 1):.1%} from the last price {last_price:.6g} (band {limits.entry_band_pct:.1%})")
    if proposal.stop is not None and (proposal.stop >= last_price if buy else proposal.stop <= last_price):
        issues.append(f"{name}: stop {proposal.stop:.6g} is not on the losing side of the last price {last_price:.6g}")
    targets: list[tuple[str, float]] = [(k, v) for k, v in (("target1", proposal.target1), ("target2", proposal.target2)) if v is not None]
    for key, value in targets:
        if value <= last_price if buy else value >= last_price:
            issues.append(f"{name}: {key} {value:.6g} is not on the winning side of the last price {last_price:.6g}")
    if proposal.target1 is not None and proposal.target2 is not None and (proposal.target2 < proposal.target1 if buy else proposal.target2 > proposal.target1):
        issues.append(f"{name}: target2 {proposal.target2:.6g} comes before target1 {proposal.target1:.6g}")
    if atr is not None and atr > 0:
        reach = limits.max_atr_multiple * atr
        placed = [("stop", proposal.stop)] if proposal.stop is not None else []
        for key, value in [*placed, *targets]:
            if abs(value - last_price) > reach:
                issues.append(f"{name}: {key} {value:.6g} is {abs(value - last_price) / atr:.1f} ATR from the last price {last_price:.6g} (at most {limits.max_atr_multiple:g})")
    return issues
