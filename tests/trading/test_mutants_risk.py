"""Hard limits at their exact edges: each test here failed a mutant of trading/risk.py that the
worked examples and the property tests let through (scripts/mutate.py; issue 18)."""

from __future__ import annotations

from typing import Any

from trading.models import Action, PortfolioSnapshot, TradeProposal
from trading.risk import RiskLimits, assess


def _proposal(symbol: str = "AAPL", action: Action = Action.BUY, **kw: Any) -> TradeProposal:
    return TradeProposal(symbol=symbol, action=action, confidence=0.7, rationale="test", **kw)


def _book(**kw: Any) -> PortfolioSnapshot:
    base: dict[str, Any] = {"cash": 100_000.0, "equity": 100_000.0, "prices": {"AAPL": 100.0}}
    base.update(kw)
    return PortfolioSnapshot(**base)


def test_a_sector_holding_priced_at_zero_cannot_be_valued_so_blocks_new_risk() -> None:
    book = _book(positions={"MSFT": 10.0}, prices={"AAPL": 100.0, "MSFT": 0.0})
    res = assess(_proposal(quantity=10), book, RiskLimits())
    assert not res.approved
    assert res.hard_violations == ["no price for MSFT to value sector information technology before adding AAPL"]


def test_one_whole_share_within_limits_passes_without_a_violation() -> None:
    res = assess(_proposal(quantity=1), _book(), RiskLimits())
    assert res.approved and res.quantity == 1 and res.hard_violations == []


def test_less_than_one_whole_share_is_refused_and_says_so() -> None:
    res = assess(_proposal(quantity=0.5), _book(), RiskLimits())
    assert not res.approved and res.quantity == 0
    assert res.hard_violations == ["AAPL: less than one whole share requested"]
    assert "floored to whole shares" in res.reasons


def test_every_unpriced_sector_holding_is_named() -> None:
    book = _book(positions={"MSFT": 10.0, "NVDA": 5.0}, prices={"AAPL": 100.0})
    res = assess(_proposal(quantity=10), book, RiskLimits())
    assert not res.approved
    assert res.hard_violations == [
        "no price for MSFT to value sector information technology before adding AAPL",
        "no price for NVDA to value sector information technology before adding AAPL",
    ]


def test_a_zero_quantity_is_no_trade_and_no_violation() -> None:
    res = assess(_proposal(quantity=0), _book(), RiskLimits())
    assert not res.approved and res.reasons == ["zero quantity requested"] and res.hard_violations == []
