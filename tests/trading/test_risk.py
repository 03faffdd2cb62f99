"""Hard risk limits: worked examples, then a property test over arbitrary proposals and books."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trading.models import Action, PortfolioSnapshot, RiskAssessment, TradeProposal
from trading.risk import FRACTION_STEP, RiskLimits, RiskLimitsError, assess

TOL = 1e-9  # relative slack for float comparisons


def _proposal(symbol: str = "AAPL", action: Action = Action.BUY, **kw: Any) -> TradeProposal:
    return TradeProposal(symbol=symbol, action=action, confidence=0.7, rationale="test", **kw)


def _book(**kw: Any) -> PortfolioSnapshot:
    base: dict[str, Any] = {"cash": 100_000.0, "equity": 100_000.0, "prices": {"AAPL": 100.0}}
    base.update(kw)
    return PortfolioSnapshot(**base)


# --- examples ---------------------------------------------------------------------------------------


def test_position_cap_cuts_to_exactly_the_cap_in_whole_shares() -> None:
    res = assess(_proposal(quantity=200), _book(), RiskLimits(), price=150.0)
    assert res.approved and res.quantity == 133  # 20% of 100k = 20k / 150 = 133.33
    assert res.hard_violations == ["position AAPL 30.0% > 20.0% of equity: cut 200 -> 133"]

    exact = assess(_proposal(quantity=300), _book(), RiskLimits())
    assert exact.quantity == 200 and "cut 300 -> 200" in exact.hard_violations[0]


def test_fractional_shares_size_to_the_exact_cap() -> None:
    res = assess(_proposal(quantity=200), _book(), RiskLimits(), price=150.0, fractional=True)
    assert res.quantity == pytest.approx(20_000 / 150)


def test_position_cap_counts_the_existing_holding() -> None:
    book = _book(positions={"AAPL": 150.0})
    res = assess(_proposal(quantity=100), book, RiskLimits())
    assert res.quantity == 50
    full = assess(_proposal(quantity=1), _book(positions={"AAPL": 200.0}), RiskLimits())
    assert not full.approved and full.quantity == 0
    assert "position AAPL" in full.hard_violations[0]


def test_within_limits_passes_untouched() -> None:
    res = assess(_proposal(quantity=10), _book(), RiskLimits())
    assert res == RiskAssessment(symbol="AAPL", approved=True, quantity=10)


def test_sector_cap_with_two_symbols_in_the_same_sector() -> None:
    limits = RiskLimits(sector_map={"AAPL": "tech", "MSFT": "tech", "XOM": "energy"})
    book = _book(positions={"MSFT": 200.0, "XOM": 250.0}, prices={"AAPL": 100.0, "MSFT": 100.0, "XOM": 100.0})
    res = assess(_proposal(quantity=150), book, limits)
    assert res.quantity == 100  # tech: 20k MSFT + 10k AAPL = 30%; energy does not count
    assert any(v.startswith("sector tech") and "cut 150 -> 100" in v for v in res.hard_violations)


def test_unmapped_symbols_are_each_their_own_sector() -> None:
    # KO and PEP are in no sector map: each is its own sector, so 25 % in KO leaves PEP its full
    # position cap (a shared "unknown" sector would have left 5 %).
    book = _book(positions={"KO": 250.0}, prices={"PEP": 100.0, "KO": 100.0})
    res = assess(_proposal(symbol="PEP", quantity=200), book, RiskLimits())
    assert res.quantity == 200 and res.hard_violations == []
    # Mapped to one sector, the sector cap binds: 25 % + 5 % = 30 %.
    shared = assess(_proposal(symbol="PEP", quantity=200), book, RiskLimits(sector_map={"KO": "staples", "PEP": "staples"}))
    assert shared.quantity == 50 and any("sector staples" in v for v in shared.hard_violations)
    # The default map puts the default universe's tech names together.
    tech = assess(_proposal(quantity=200), _book(positions={"MSFT": 250.0}, prices={"AAPL": 100.0, "MSFT": 100.0}), RiskLimits())
    assert tech.quantity == 50 and any("sector information technology" in v for v in tech.hard_violations)


def test_sector_needs_prices_for_the_other_holdings() -> None:
    limits = RiskLimits(sector_map={"AAPL": "tech", "MSFT": "tech"})
    res = assess(_proposal(quantity=10), _book(positions={"MSFT": 10.0}), limits)
    assert not res.approved and "no price for MSFT" in res.hard_violations[0]


def test_max_open_positions_blocks_new_symbols_not_adds() -> None:
    limits = RiskLimits(max_open_positions=2)
    prices = {"AAPL": 100.0, "MSFT": 100.0, "XOM": 100.0}
    book = _book(positions={"AAPL": 10.0, "MSFT": 10.0, "KO": 0.0}, prices=prices)
    new = assess(_proposal("XOM", quantity=10), book, limits)
    assert not new.approved and "max open positions: 2 >= 2: cannot open XOM" in new.hard_violations
    add = assess(_proposal("AAPL", quantity=10), book, limits)
    assert add.approved and add.quantity == 10


def test_cash_limit_prevents_negative_cash() -> None:
    res = assess(_proposal(quantity=100), _book(cash=5_000.0), RiskLimits())
    assert res.quantity == 50 and any(v.startswith("cash") for v in res.hard_violations)
    broke = assess(_proposal(quantity=1), _book(cash=-10.0), RiskLimits())
    assert not broke.approved


@pytest.mark.parametrize(
    ("book_kw", "needle"),
    [
        ({"trades_today": 20}, "trades per day"),
        ({"start_of_day_equity": 104_000.0}, "daily loss limit"),  # down 3.8% today
        ({"peak_equity": 120_000.0}, "drawdown breaker"),  # 16.7% below peak
        ({"equity": 0.0}, "equity"),
    ],
)
def test_breakers_block_new_risk_but_never_exits(book_kw: dict[str, Any], needle: str) -> None:
    book = _book(positions={"AAPL": 50.0}, **book_kw)
    more = assess(_proposal(quantity=10), book, RiskLimits())
    assert not more.approved and more.quantity == 0
    assert any(needle in v and "AAPL" in v for v in more.hard_violations)

    exit_ = assess(_proposal(action=Action.SELL, quantity=50), book, RiskLimits())
    assert exit_.approved and exit_.quantity == 50 and "risk-reducing" in exit_.reasons


def test_breakers_not_tripped_just_above_the_line() -> None:
    book = _book(start_of_day_equity=103_000.0, peak_equity=117_000.0, trades_today=19)
    assert assess(_proposal(quantity=10), book, RiskLimits()).approved


def test_shorting_rejected_by_default() -> None:
    res = assess(_proposal(action=Action.SELL, quantity=10), _book(), RiskLimits())
    assert not res.approved and res.hard_violations == ["short AAPL not allowed (allow_short=False)"]
    allowed = assess(_proposal(action=Action.SELL, quantity=500), _book(), RiskLimits(allow_short=True))
    assert allowed.quantity == 200  # still the 20% position cap, no cash needed to sell short


def test_reducing_trade_is_capped_at_the_position_never_flips() -> None:
    book = _book(positions={"AAPL": 30.5})
    res = assess(_proposal(action=Action.SELL, quantity=100), book, RiskLimits())
    assert res.quantity == 30.5  # closes exactly, fractional remainder included
    assert res.hard_violations and "no flip AAPL" in res.hard_violations[0]
    cover = assess(_proposal(action=Action.BUY), _book(positions={"AAPL": -40.0}), RiskLimits())
    assert cover.quantity == 40 and "sized to limits" in cover.reasons


def test_none_quantity_is_sized_to_the_limits() -> None:
    res = assess(_proposal(), _book(cash=15_000.0), RiskLimits())
    assert res.quantity == 150 and "sized to limits" in res.reasons
    assert "bound by cash limit" in res.reasons and res.hard_violations == []
    full = assess(_proposal(), _book(positions={"AAPL": 200.0}), RiskLimits())
    assert not full.approved and "no room for AAPL" in full.hard_violations[0]


def test_hold() -> None:
    res = assess(_proposal(action=Action.HOLD, quantity=10), _book(), RiskLimits())
    assert res == RiskAssessment(symbol="AAPL", approved=False, quantity=0, reasons=["hold"])


def test_price_precedence_and_missing_price() -> None:
    book = _book(prices={"AAPL": 1_000.0})
    assert assess(_proposal(quantity=500, entry=200.0), book, RiskLimits()).quantity == 100
    assert assess(_proposal(quantity=500, entry=200.0), book, RiskLimits(), price=400.0).quantity == 50
    assert assess(_proposal(quantity=500), book, RiskLimits()).quantity == 20

    missing = assess(_proposal(quantity=1), _book(prices={}), RiskLimits())
    assert missing == RiskAssessment(
        symbol="AAPL", approved=False, quantity=0, hard_violations=["no price for AAPL"]
    )
    assert not assess(_proposal(quantity=1), _book(), RiskLimits(), price=0.0).approved
    assert not assess(_proposal(quantity=1), _book(), RiskLimits(), price=-5.0).approved


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"max_position_pct": -0.1}, "max_position_pct"),
        ({"max_sector_pct": 1.5}, "max_sector_pct"),
        ({"daily_loss_limit_pct": 0}, "daily_loss_limit_pct"),
        ({"max_open_positions": 0}, "max_open_positions"),
        ({"max_trades_per_day": 0}, "max_trades_per_day"),
        ({"max_drawdown_pct": float("nan")}, "max_drawdown_pct"),
        ({"max_positon_pct": 0.1}, "max_positon_pct"),  # typo must not be silently ignored
    ],
)
def test_bad_limits_raise_naming_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(RiskLimitsError, match=field):
        RiskLimits.from_mapping(bad)
    with pytest.raises(ValidationError, match=field):
        RiskLimits(**bad)


def test_from_mapping_accepts_good_config() -> None:
    limits = RiskLimits.from_mapping({"max_position_pct": 0.1, "sector_map": {"AAPL": "tech"}})
    assert limits.max_position_pct == 0.1 and limits.sector_of("AAPL") == "tech"
    assert limits.sector_of("ZZZ") == "unmapped ZZZ" and limits.sector_of("YYY") != limits.sector_of("ZZZ")


# --- property: whatever comes in, what comes out respects the limits --------------------------------

SYMBOLS = [
    "AAPL",
    "MSFT",
    "GOOG",
    "NVDA",
    "XOM",
    "CVX",
    "JPM",
    "BAC",
    "KO",
    "PEP",
    "T",
    "VZ",
    "F",
    "GM",
    "IBM",
    "AMD",
]
SECTORS = ["tech", "energy", "banks", "staples"]

pcts = st.floats(min_value=0.001, max_value=1.0)
sector_maps = st.dictionaries(st.sampled_from(SYMBOLS), st.sampled_from(SECTORS), max_size=len(SYMBOLS))
limits_st = st.one_of(
    st.builds(RiskLimits, sector_map=sector_maps),
    st.builds(
        RiskLimits,
        max_position_pct=pcts,
        max_sector_pct=pcts,
        sector_map=sector_maps,
        max_open_positions=st.integers(1, 16),
        max_trades_per_day=st.integers(1, 30),
        daily_loss_limit_pct=pcts,
        max_drawdown_pct=pcts,
        allow_short=st.booleans(),
    ),
)
prices_st = st.floats(min_value=0.01, max_value=1e5)
quantities = st.one_of(
    st.none(),
    st.integers(0, 10_000).map(float),
    st.floats(min_value=0, max_value=1e300),
    st.just(math.inf),
)
proposals = st.builds(
    TradeProposal,
    symbol=st.sampled_from(SYMBOLS),
    action=st.sampled_from([Action.BUY, Action.BUY, Action.SELL, Action.SELL, Action.HOLD]),
    confidence=st.floats(0, 1),
    rationale=st.just("property"),
    entry=st.one_of(st.none(), prices_st, prices_st, st.floats(min_value=1e-4, max_value=math.inf)),
    quantity=quantities,
)
equities = st.floats(min_value=1e4, max_value=1e7) | st.floats(min_value=1.0, max_value=1e9)


@st.composite
def snapshots(draw: st.DrawFn) -> PortfolioSnapshot:
    held = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=draw(st.sampled_from([3, 15]))))
    nonzero = st.one_of(
        st.integers(-5_000, 5_000).filter(bool).map(float),
        st.floats(min_value=-1e5, max_value=1e5).filter(lambda q: q != 0),
    )
    positions = {s: draw(nonzero) for s in held}
    # Every holding has a price; some other symbols (maybe the proposal's) too.
    priced = set(held) | set(draw(st.lists(st.sampled_from(SYMBOLS), max_size=4)))
    equity = draw(equities)
    # Often absent or near the breaker lines (so both sides get exercised), sometimes anywhere.
    sod = st.floats(min_value=0.9, max_value=1.1).map(lambda f: equity * f)
    peak = st.floats(min_value=1.0, max_value=1.3).map(lambda f: equity * f)
    return PortfolioSnapshot(
        cash=draw(st.floats(min_value=-1e6, max_value=1e9) | st.floats(-0.1, 1.5).map(lambda f: equity * f)),
        equity=equity,
        positions=positions,
        prices={s: draw(prices_st) for s in sorted(priced)},
        start_of_day_equity=draw(st.one_of(st.none(), st.none(), sod, equities)),
        peak_equity=draw(st.one_of(st.none(), st.none(), peak, equities)),
        trades_today=draw(st.integers(0, 22)),
    )


def _price_used(p: TradeProposal, book: PortfolioSnapshot, explicit: float | None) -> float | None:
    px = explicit if explicit is not None else p.entry if p.entry is not None else book.prices.get(p.symbol)
    return px if px is not None and math.isfinite(px) and px > 0 else None


def _sector_gross(
    book: PortfolioSnapshot, limits: RiskLimits, symbol: str, new_pos: float, px: float
) -> float:
    sector = limits.sector_of(symbol)
    others = sum(
        abs(q) * book.prices[s]
        for s, q in book.positions.items()
        if s != symbol and q != 0 and limits.sector_of(s) == sector
    )
    return others + abs(new_pos) * px


@st.composite
def plausible_books(draw: st.DrawFn) -> PortfolioSnapshot:
    """Books with no breaker tripped, so sizing against the caps gets most of the examples."""
    held = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=8))
    equity = draw(st.floats(min_value=1e4, max_value=1e7))
    return PortfolioSnapshot(
        cash=draw(st.floats(min_value=0, max_value=1.2)) * equity,
        equity=equity,
        positions={s: float(draw(st.integers(-300, 1_000).filter(bool))) for s in held},
        prices={s: draw(st.floats(min_value=1, max_value=1_000)) for s in SYMBOLS},
    )


plausible_proposals = st.builds(
    TradeProposal,
    symbol=st.sampled_from(SYMBOLS),
    action=st.sampled_from([Action.BUY, Action.SELL]),
    confidence=st.just(0.5),
    rationale=st.just("plausible"),
    entry=st.none() | st.floats(min_value=1, max_value=1_000),
    quantity=st.none() | st.integers(0, 5_000).map(float) | st.floats(min_value=0, max_value=5_000),
)


@settings(max_examples=300, deadline=None)
@given(
    proposal=proposals,
    book=snapshots(),
    limits=limits_st,
    explicit=st.one_of(st.none(), st.none(), prices_st, st.floats(min_value=-10, max_value=1e6)),
    fractional=st.booleans(),
)
def test_approved_trades_never_breach_the_limits(
    proposal: TradeProposal,
    book: PortfolioSnapshot,
    limits: RiskLimits,
    explicit: float | None,
    fractional: bool,
) -> None:
    _check(proposal, book, limits, explicit, fractional)


@settings(max_examples=300, deadline=None)
@given(proposal=plausible_proposals, book=plausible_books(), limits=limits_st, fractional=st.booleans())
def test_plausible_trades_are_sized_to_the_tightest_cap(
    proposal: TradeProposal, book: PortfolioSnapshot, limits: RiskLimits, fractional: bool
) -> None:
    _check(proposal, book, limits, None, fractional)


def _check(
    proposal: TradeProposal,
    book: PortfolioSnapshot,
    limits: RiskLimits,
    explicit: float | None,
    fractional: bool,
) -> None:
    """Apply the approved quantity to the book and check every limit, exits and breakers."""
    res = assess(proposal, book, limits, price=explicit, fractional=fractional)
    q = res.quantity
    assert res.symbol == proposal.symbol
    assert q >= 0 and math.isfinite(q) and res.approved == (q > 0)
    if proposal.quantity is not None:
        assert q <= proposal.quantity
    px = _price_used(proposal, book, explicit)
    if proposal.action is Action.HOLD or px is None:
        assert not res.approved
        return

    sym = proposal.symbol
    pos = book.positions.get(sym, 0.0)
    sign = 1.0 if proposal.action is Action.BUY else -1.0
    new_pos = pos + sign * q
    requested = math.inf if proposal.quantity is None else proposal.quantity

    if pos * sign < 0:  # risk-reducing: always possible, never past flat
        assert abs(new_pos) <= abs(pos) and new_pos * pos >= 0
        if requested >= abs(pos):
            assert q == abs(pos)
        else:
            assert q == (requested if fractional else math.floor(requested))
        return

    # Risk-increasing from here on.
    equity = book.equity
    sod, peak = book.start_of_day_equity, book.peak_equity
    tripped = (
        book.trades_today >= limits.max_trades_per_day
        or (sod is not None and equity <= sod * (1 - limits.daily_loss_limit_pct))
        or (peak is not None and equity <= peak * (1 - limits.max_drawdown_pct))
        or (pos == 0 and sum(1 for v in book.positions.values() if v != 0) >= limits.max_open_positions)
        or (sign < 0 and not limits.allow_short)  # flat or short already: selling shorts (more)
    )
    if tripped:
        assert q == 0, res
        return
    if any("too small to size" in v for v in res.hard_violations):  # price ~1e-308: caps overflow
        assert q == 0 and px < 1e-250
        return
    if not fractional:
        assert q == math.floor(q)

    # Usage of each cap after the trade (value, cap); the trade must fit every one.
    def usage(extra: float) -> list[tuple[float, float]]:
        after = pos + sign * (q + extra)
        out = [
            (abs(after) * px, limits.max_position_pct * equity),
            (_sector_gross(book, limits, sym, after, px), limits.max_sector_pct * equity),
        ]
        if sign > 0:
            out.append(((q + extra) * px, book.cash))
        return out

    if q > 0:  # a book already over a cap may stay over it, it just cannot grow
        for value, cap in usage(0.0):
            assert value <= cap + abs(cap) * TOL, (value, cap, res)
    if pos == 0 and q > 0:  # opened a new position: there was room for it
        assert sum(1 for v in book.positions.values() if v != 0) < limits.max_open_positions

    # And it is not cut more than needed: one more share (or fractional lot) would not fit.
    wanted = requested if fractional or not math.isfinite(requested) else math.floor(requested)
    if q < wanted:
        bump = FRACTION_STEP if fractional else 1.0
        assert any(value >= cap - abs(cap) * TOL - 1e-12 for value, cap in usage(bump)), res
