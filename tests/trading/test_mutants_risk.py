"""Hard limits at their exact edges: each test here failed a mutant of trading/risk.py that the
worked examples and the property tests let through (scripts/mutate.py; issue 18)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trading.models import Action, PortfolioSnapshot, TradeProposal
from trading.risk import RiskLimits, RiskLimitsError, assess


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


def test_closing_exactly_a_fractional_position_in_whole_share_mode_closes_it_all() -> None:
    res = assess(_proposal(action=Action.SELL, quantity=30.5), _book(positions={"AAPL": 30.5}), RiskLimits())
    assert res.quantity == 30.5 and res.reasons == ["risk-reducing"] and res.hard_violations == []


def test_a_cut_names_the_position_and_the_sector_usage_it_would_have_reached() -> None:
    # MSFT holds 15% of equity in the sector; 250 AAPL at 100 would be 25% alone, 40% with MSFT.
    book = _book(positions={"MSFT": 150.0}, prices={"AAPL": 100.0, "MSFT": 100.0})
    res = assess(_proposal(quantity=250), book, RiskLimits())
    assert res.quantity == 150
    assert res.hard_violations == [
        "position AAPL 25.0% > 20.0% of equity: cut 250 -> 150",
        "sector information technology with AAPL 40.0% > 30.0% of equity: cut 250 -> 150",
    ]


def test_the_trading_window_defaults_and_bounds() -> None:
    limits = RiskLimits()
    assert (limits.window_open_delay_min, limits.flatten_before_close_min, limits.flatten_at_close) == (0, 5, True)
    for name in ("window_open_delay_min", "flatten_before_close_min"):
        for ok in (0, 390):
            assert getattr(RiskLimits(**{name: ok}), name) == ok
        for bad in (-1, 391):
            with pytest.raises(ValidationError, match=name):
                RiskLimits(**{name: bad})


def test_the_exchange_calendar_is_checked_by_name() -> None:
    assert RiskLimits(exchange="XLON").exchange == "XLON"
    with pytest.raises(ValidationError, match="unknown exchange calendar 'NOPE'"):
        RiskLimits(exchange="NOPE")


def test_a_cash_cut_says_what_the_buy_would_have_cost() -> None:
    res = assess(_proposal(quantity=100), _book(cash=5_000.0), RiskLimits())
    assert res.quantity == 50
    assert res.hard_violations == ["cash: AAPL buy costs 10,000.00 > cash 5,000.00: cut 100 -> 50"]


def test_fractional_quantities_are_written_as_such_in_the_reasons() -> None:
    res = assess(_proposal(action=Action.SELL, quantity=100), _book(positions={"AAPL": 30.5}), RiskLimits())
    assert res.hard_violations == ["no flip AAPL: capped at the position: cut 100 -> 30.5"]
    huge = assess(_proposal(quantity=1e16), _book(), RiskLimits())
    assert huge.quantity == 200 and huge.hard_violations[0].endswith("cut 1e+16 -> 200")


def test_limits_are_frozen_once_built() -> None:
    limits = RiskLimits()
    with pytest.raises(ValidationError, match="frozen"):
        limits.max_position_pct = 0.9  # type: ignore[misc]


def test_partial_exits_floor_to_whole_shares_and_say_so_only_when_they_do() -> None:
    book = _book(positions={"AAPL": 30.0})
    floored = assess(_proposal(action=Action.SELL, quantity=10.5), book, RiskLimits())
    assert floored.quantity == 10 and floored.reasons == ["risk-reducing", "floored to whole shares"]
    whole = assess(_proposal(action=Action.SELL, quantity=10), book, RiskLimits())
    assert whole.quantity == 10 and whole.reasons == ["risk-reducing"]
    fractional = assess(_proposal(action=Action.SELL, quantity=10.5), book, RiskLimits(), fractional=True)
    assert fractional.quantity == 10.5 and fractional.reasons == ["risk-reducing"]


@pytest.mark.parametrize(("book_kw", "needle"), [({"start_of_day_equity": 100_000.0}, "daily loss limit"), ({"peak_equity": 100_000.0}, "drawdown breaker")])
def test_breakers_trip_at_exact_equality(book_kw: dict[str, Any], needle: str) -> None:
    # 25% is exact in binary: 100,000 x (1 - 0.25) is 75,000 to the last bit.
    limits = RiskLimits(daily_loss_limit_pct=0.25, max_drawdown_pct=0.25)
    at_line = assess(_proposal(quantity=10), _book(equity=75_000.0, **book_kw), limits)
    assert not at_line.approved and any(needle in v for v in at_line.hard_violations)
    above = assess(_proposal(quantity=10), _book(equity=75_000.01, **book_kw), limits)
    assert above.approved


def test_a_zero_holding_in_the_sector_needs_no_price() -> None:
    res = assess(_proposal(quantity=10), _book(positions={"MSFT": 0.0}), RiskLimits())
    assert res.approved and res.quantity == 10 and res.hard_violations == []


def test_unknown_cash_is_no_cash() -> None:
    res = assess(_proposal(quantity=10), _book(cash=float("nan"), prices={"AAPL": 0.5}), RiskLimits())
    assert not res.approved and res.hard_violations == ["cash: AAPL buy costs 5.00 > cash 0.00: cut 10 -> 0"]


def test_a_vanishing_price_is_not_sized_blindly() -> None:
    res = assess(_proposal(quantity=10), _book(prices={"AAPL": 1e-320}), RiskLimits())
    assert not res.approved and res.quantity == 0
    assert res.hard_violations == ["price 9.99989e-321 for AAPL too small to size against limits"]


def test_sizing_to_limits_with_room_for_one_share_is_no_violation() -> None:
    res = assess(_proposal(), _book(cash=150.0), RiskLimits())
    assert res.quantity == 1 and res.reasons == ["sized to limits", "bound by cash limit"] and res.hard_violations == []


def test_no_room_names_the_usage_as_it_stands() -> None:
    res = assess(_proposal(), _book(positions={"AAPL": 200.0}), RiskLimits())
    assert res.hard_violations == ["position AAPL 20.0% vs limit 20.0% of equity: no room for AAPL"]


def test_a_position_that_is_not_a_number_blocks_the_symbol() -> None:
    res = assess(_proposal(quantity=10), _book(positions={"AAPL": float("inf")}), RiskLimits())
    assert not res.approved and res.quantity == 0 and res.hard_violations == ["position AAPL is not a finite number"]


@pytest.mark.parametrize(("requested", "written"), [(999_999_999_999_999.0, "999999999999999"), (1e15, "1e+15")])
def test_whole_quantities_are_written_in_full_below_1e15(requested: float, written: str) -> None:
    res = assess(_proposal(quantity=requested), _book(), RiskLimits())
    assert res.hard_violations[0].endswith(f"cut {written} -> 200")


def test_a_position_one_share_over_its_cap_is_bound_by_that_cap() -> None:
    res = assess(_proposal(), _book(positions={"AAPL": 201.0}), RiskLimits())
    assert not res.approved and res.reasons == ["sized to limits", "bound by position limit"]
    assert res.hard_violations == ["position AAPL 20.1% vs limit 20.0% of equity: no room for AAPL"]


def test_entries_floor_to_whole_shares_and_say_so_only_when_they_do() -> None:
    assert assess(_proposal(quantity=10.5), _book(), RiskLimits()).reasons == ["floored to whole shares"]
    assert assess(_proposal(quantity=10), _book(), RiskLimits()).reasons == []


def test_a_short_sale_is_not_cut_by_cash() -> None:
    res = assess(_proposal(action=Action.SELL, quantity=150), _book(cash=1_000.0), RiskLimits(allow_short=True))
    assert res.quantity == 150 and res.hard_violations == []


def test_a_sector_holding_priced_at_infinity_cannot_be_valued() -> None:
    book = _book(positions={"MSFT": 10.0}, prices={"AAPL": 100.0, "MSFT": float("inf")})
    res = assess(_proposal(quantity=10), book, RiskLimits())
    assert res.hard_violations == ["no price for MSFT to value sector information technology before adding AAPL"]


def test_a_position_well_over_its_cap_is_bound_by_that_cap_and_says_so() -> None:
    # A price rise took AAPL to 20.5% of equity: a sized buy has no room and names the cap (it used
    # to be refused with "bound by  limit" and no violation at all).
    res = assess(_proposal(), _book(positions={"AAPL": 205.0}), RiskLimits())
    assert not res.approved and res.reasons == ["sized to limits", "bound by position limit"]
    assert res.hard_violations == ["position AAPL 20.5% vs limit 20.0% of equity: no room for AAPL"]


def test_a_sector_holding_priced_below_one_dollar_is_valued() -> None:
    # Any positive finite price values a holding: 50 cents is a price, not a missing one.
    book = _book(positions={"MSFT": 10.0}, prices={"AAPL": 100.0, "MSFT": 0.5})
    res = assess(_proposal(quantity=10), book, RiskLimits())
    assert res.approved and res.quantity == 10 and res.hard_violations == []


def test_an_exchange_calendar_alias_is_accepted() -> None:
    assert RiskLimits(exchange="NYSE").exchange == "NYSE"  # exchange_calendars' alias of XNYS


def test_at_most_ten_open_positions_by_default() -> None:
    assert RiskLimits().max_open_positions == 10


def test_bad_limits_name_each_offending_field() -> None:
    with pytest.raises(RiskLimitsError, match=r"\(max_open_positions\): max_open_positions: "):
        RiskLimits.from_mapping({"max_open_positions": "many"})


def test_limits_that_are_not_a_mapping_are_named_as_the_root() -> None:
    with pytest.raises(RiskLimitsError, match=r"\(<root>\): <root>: "):
        RiskLimits.from_mapping([1, 2])  # type: ignore[arg-type]


def test_a_sized_buy_with_no_room_is_zero_shares_never_negative() -> None:
    res = assess(_proposal(), _book(positions={"AAPL": 205.0}), RiskLimits())
    assert res.quantity == 0.0


def test_a_cap_within_float_noise_of_a_zero_room_binds_too() -> None:
    # The position cap leaves exactly 0 shares; 5e-11 of cash leaves 5e-13, within the absolute slack
    # (1e-12) of 0: both caps bind and both are named.
    res = assess(_proposal(), _book(cash=5e-11, positions={"AAPL": 200.0}), RiskLimits())
    assert res.reasons == ["sized to limits", "bound by position, cash limit"]


def test_an_account_worth_under_a_dollar_may_still_add_risk_and_one_worth_nothing_may_not() -> None:
    # Equity 0.50 at a price of 1 cent: the position cap is 10 shares (0.10), so 5 shares (0.05) pass
    # every limit. Only a non-positive equity blocks new risk, not a small one.
    small = _book(cash=0.5, equity=0.5, prices={"AAPL": 0.01})
    res = assess(_proposal(quantity=5), small, RiskLimits(), fractional=True)
    assert res.approved and res.quantity == 5 and res.hard_violations == []
    broke = assess(_proposal(quantity=5), _book(cash=0.5, equity=0.0, prices={"AAPL": 0.01}), RiskLimits(), fractional=True)
    assert not broke.approved and broke.hard_violations[0] == "equity 0.0 <= 0: no new risk in AAPL"


def test_the_sector_room_is_the_cap_less_exactly_the_other_holdings() -> None:
    # MSFT holds 25,000 of the sector (25%): the 30% cap leaves 5,000, 50 AAPL at 100, to the share
    # and to the fractional lot; a dollar more or less held elsewhere would show in either mode.
    book = _book(positions={"MSFT": 250.0}, prices={"AAPL": 100.0, "MSFT": 100.0})
    for fractional in (False, True):
        res = assess(_proposal(), book, RiskLimits(), fractional=fractional)
        assert res.quantity == 50.0 and res.reasons == ["sized to limits", "bound by sector limit"]


def test_the_price_and_the_share_mode_must_be_named() -> None:
    # A price passed by position could be a quantity meant for something else: assess refuses it.
    with pytest.raises(TypeError):
        assess(_proposal(quantity=10), _book(), RiskLimits(), 100.0)  # type: ignore[misc]
    assert assess(_proposal(quantity=10), _book(), RiskLimits(), price=100.0).quantity == 10


@pytest.mark.parametrize(
    "first",
    [
        {"AAPL": 10.0},  # the symbol itself (its own shares count as held, not as the sector's others)
        {"NVDA": 0.0},  # a flat holding in the sector
        {"JPM": 400.0},  # a holding in another sector
    ],
    ids=["the-symbol-itself", "a-flat-holding", "another-sector"],
)
def test_a_holding_the_sector_sum_skips_does_not_end_it(first: dict[str, float]) -> None:
    # MSFT's 25,000 counts wherever it sits in the book: listed after a holding the sum skips, the 30%
    # sector cap still leaves 5,000 less what AAPL already holds, to the share.
    held = first.get("AAPL", 0.0)
    prices = {"AAPL": 100.0, "MSFT": 100.0, "NVDA": 100.0, "JPM": 100.0}
    book = _book(positions={**first, "MSFT": 250.0}, prices=prices)
    res = assess(_proposal(), book, RiskLimits())
    assert res.quantity == 50.0 - held and res.reasons == ["sized to limits", "bound by sector limit"]
