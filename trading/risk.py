"""Hard risk limits, enforced in code between a proposal and any broker.

`assess` is pure: proposal + portfolio snapshot + limits -> the quantity that may be traded (possibly
cut, possibly zero) and why. Trades that only shrink a position always pass, so a tripped breaker can
never trap the book in a position; everything that adds risk is gated and then cut to the tightest cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from strategies import controls
from strategies.entries import LIMIT_REL_TOL, capped_quantity, position_room, sector_room
from trading.models import Action, PortfolioSnapshot, RiskAssessment, TradeProposal

UNKNOWN_SECTOR = "unknown"  # kept for callers; a symbol missing from the map is its own sector (`sector_of`)
# GICS sectors of the default universe (assets.partitions.DEFAULT_UNIVERSE): the default `sector_map`.
DEFAULT_SECTORS = {
    "AAPL": "information technology",
    "MSFT": "information technology",
    "NVDA": "information technology",
    "AMZN": "consumer discretionary",
    "GOOGL": "communication services",
    "META": "communication services",
    "JPM": "financials",
    "XOM": "energy",
}
# Slack for float noise only: a cap computed by division can land an ulp over when multiplied back.
_REL_TOL = LIMIT_REL_TOL
# Smallest fractional lot (brokers take 9 decimals); also keeps float dust out of sized orders.
FRACTION_STEP = 1e-9

Pct = Annotated[float, Field(gt=0, le=1)]
Count = Annotated[int, Field(ge=1)]


class RiskLimitsError(ValueError):
    """Risk limits that cannot be used as configured."""


class RiskLimits(BaseModel):
    """The one risk configuration (the pipeline file's `limits`): the hard limits `assess` applies
    to each proposal and the controls the executor applies at send time (`trading.safety`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position_pct: Pct = 0.20  # of equity, absolute market value in one symbol
    max_sector_pct: Pct = 0.30  # of equity, gross market value in one sector
    # symbol -> sector; a symbol not in it is a sector of its own (one shared "unknown" sector would
    # cap a whole unmapped universe at max_sector_pct together)
    sector_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SECTORS))
    max_open_positions: Count = 10
    max_trades_per_day: Count = 20
    daily_loss_limit_pct: Pct = 0.03  # below start_of_day_equity * (1 - x): no new risk today
    max_drawdown_pct: Pct = 0.15  # below peak_equity * (1 - x): circuit breaker, no new risk
    allow_short: bool = False
    # The trading window, on the exchange's calendar (its timezone, holidays and half days):
    # entries from the open + window_open_delay_min until flatten_before_close_min before the
    # close; from then on no new risk and, with flatten_at_close, every position is closed.
    exchange: str = "XNYS"
    window_open_delay_min: int = Field(0, ge=0, le=390)
    flatten_before_close_min: int = Field(5, ge=0, le=390)
    flatten_at_close: bool = True

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import exchange_calendars as xcals

        if value not in xcals.get_calendar_names(include_aliases=True):
            raise ValueError(f"unknown exchange calendar {value!r} (e.g. XNYS, XLON)")
        return value

    def sector_of(self, symbol: str) -> str:
        """The symbol's sector; one missing from `sector_map` is its own ("unmapped <symbol>")."""
        return self.sector_map.get(symbol, f"unmapped {symbol}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RiskLimits:
        """Build from config; any problem is a `RiskLimitsError` naming the offending fields."""
        try:
            return cls.model_validate(dict(data) if isinstance(data, Mapping) else data)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in err["loc"]) or "<root>" for err in exc.errors()})
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
            )
            raise RiskLimitsError(f"invalid risk limits ({', '.join(fields)}): {details}") from exc


@dataclass(frozen=True)
class _Cap:
    """One sizing limit: the largest additional quantity it allows and how to describe its usage."""

    name: str
    max_qty: float
    usage: Callable[[float], str]  # usage after adding q, e.g. "position AAPL 31.2%"
    limit: str  # e.g. "20.0% of equity"


def assess(
    proposal: TradeProposal,
    snapshot: PortfolioSnapshot,
    limits: RiskLimits,
    *,
    price: float | None = None,
    fractional: bool = False,
) -> RiskAssessment:
    """Approve, cut or reject one proposal against the hard limits."""
    symbol = proposal.symbol
    if proposal.action is Action.HOLD:
        return _result(symbol, 0.0, reasons=["hold"])
    px = _resolve_price(proposal, snapshot, price)
    if px is None:
        return _result(symbol, 0.0, violations=[f"no price for {symbol}"])
    position = snapshot.positions.get(symbol, 0.0)
    if not math.isfinite(position):
        return _result(symbol, 0.0, violations=[f"position {symbol} is not a finite number"])
    if proposal.quantity == 0:
        return _result(symbol, 0.0, reasons=["zero quantity requested"])
    direction = 1.0 if proposal.action is Action.BUY else -1.0
    if controls.reduces(position, direction):  # the executor's and the backtest's rule: flat reduces nothing
        return _assess_reducing(symbol, proposal.quantity, abs(position), fractional)
    return _assess_increasing(proposal, snapshot, limits, px, direction, fractional)


def _resolve_price(proposal: TradeProposal, snapshot: PortfolioSnapshot, price: float | None) -> float | None:
    for candidate in (price, proposal.entry, snapshot.prices.get(proposal.symbol)):
        if candidate is not None:
            # The first price given is the one that counts; a bad one is not silently replaced.
            return candidate if math.isfinite(candidate) and candidate > 0 else None
    return None


def _assess_reducing(symbol: str, requested: float | None, held: float, fractional: bool) -> RiskAssessment:
    """Shrinking |position| is always allowed (no breaker may block an exit), but never past flat."""
    reasons = ["risk-reducing"]
    violations: list[str] = []
    if requested is None:
        qty = held
        reasons.append("sized to limits")
    elif requested >= held:
        qty = held  # closing exactly, even a fractional position, so nothing dangles
        if requested > held:
            violations.append(
                f"no flip {symbol}: capped at the position: cut {_fmt(requested)} -> {_fmt(held)}"
            )
    else:
        qty = requested if fractional else float(math.floor(requested))
        if qty < requested:
            reasons.append("floored to whole shares")
    return _result(symbol, qty, reasons=reasons, violations=violations)


def _assess_increasing(
    proposal: TradeProposal,
    snapshot: PortfolioSnapshot,
    limits: RiskLimits,
    px: float,
    direction: float,
    fractional: bool,
) -> RiskAssessment:
    symbol = proposal.symbol
    gates = _gate_violations(symbol, snapshot, limits, direction)
    if gates:
        return _result(symbol, 0.0, violations=gates)
    caps, missing, allowed = _caps(symbol, snapshot, limits, px, direction)
    if missing:
        return _result(symbol, 0.0, violations=missing)

    cap_qty = min(c.max_qty for c in caps)
    if cap_qty == math.inf:  # a vanishing price leaves the caps unbounded: size nothing blindly
        return _result(
            symbol, 0.0, violations=[f"price {px:g} for {symbol} too small to size against limits"]
        )
    cap_qty = allowed(1.0 if not fractional else FRACTION_STEP)

    requested = proposal.quantity
    reasons: list[str] = []
    violations: list[str] = []
    if requested is None:
        qty = cap_qty
        # Within float noise of the lowest room; slack added upwards even when a position already
        # over its cap makes that room negative (scaling a negative room by 1 + tol lowered it).
        lowest = min(x.max_qty for x in caps)
        binding = [c for c in caps if c.max_qty <= lowest + abs(lowest) * _REL_TOL + _REL_TOL]
        reasons += ["sized to limits", f"bound by {', '.join(c.name for c in binding)} limit"]
        if qty <= 0:
            violations += [f"{c.usage(0.0)} vs limit {c.limit}: no room for {symbol}" for c in binding]
    else:
        wanted = requested if fractional or not math.isfinite(requested) else float(math.floor(requested))
        qty = min(wanted, cap_qty)
        if wanted < requested:
            reasons.append("floored to whole shares")
        violations += [
            f"{c.usage(requested)} > {c.limit}: cut {_fmt(requested)} -> {_fmt(qty)}"
            for c in caps
            if c.max_qty < requested
        ]
        if qty <= 0 and not violations:
            violations.append(f"{symbol}: less than one whole share requested")
    return _result(symbol, qty, reasons=reasons, violations=violations)


def _gate_violations(
    symbol: str, snapshot: PortfolioSnapshot, limits: RiskLimits, direction: float
) -> list[str]:
    """Conditions under which no new risk may be taken at all, whatever the size."""
    out: list[str] = []
    equity = snapshot.equity
    if not (math.isfinite(equity) and equity > 0):
        out.append(f"equity {equity} <= 0: no new risk in {symbol}")
    # The session controls' rules (`strategies.controls`), as the executor and the backtest apply them.
    if controls.trades_spent(snapshot.trades_today, limits.max_trades_per_day):
        out.append(
            f"trades per day: {snapshot.trades_today} >= {limits.max_trades_per_day}: no new risk in {symbol}"
        )
    sod = snapshot.start_of_day_equity
    if sod is not None and controls.daily_loss_hit(equity, sod, limits.daily_loss_limit_pct):
        out.append(
            f"daily loss limit: equity {equity:,.2f} <= {sod:,.2f} less {limits.daily_loss_limit_pct:.1%}: "
            f"no new risk in {symbol}"
        )
    peak = snapshot.peak_equity
    if peak is not None and controls.drawdown_hit(equity, peak, limits.max_drawdown_pct):
        out.append(
            f"drawdown breaker: equity {equity:,.2f} <= peak {peak:,.2f} less {limits.max_drawdown_pct:.1%}: "
            f"no new risk in {symbol}"
        )
    if snapshot.positions.get(symbol, 0.0) == 0:
        open_count = sum(1 for s, q in snapshot.positions.items() if q != 0 and s != symbol)
        if open_count >= limits.max_open_positions:
            out.append(
                f"max open positions: {open_count} >= {limits.max_open_positions}: cannot open {symbol}"
            )
    if direction < 0 and not limits.allow_short:
        out.append(f"short {symbol} not allowed (allow_short=False)")
    return out


def _caps(
    symbol: str, snapshot: PortfolioSnapshot, limits: RiskLimits, px: float, direction: float
) -> tuple[list[_Cap], list[str], Callable[[float], float]]:
    """The sizing caps for adding q to |position| (named, for the reasons), the prices missing to
    value the sector, and the quantity they allow in lots of a step: `strategies.entries.capped_quantity`,
    the rule the backtest with limits applies too."""
    equity = snapshot.equity
    held = abs(snapshot.positions.get(symbol, 0.0))

    caps = [
        _Cap(
            name="position",
            max_qty=position_room(equity, limits.max_position_pct, px, held),
            usage=lambda q: f"position {symbol} {(held + q) * px / equity:.1%}",
            limit=f"{limits.max_position_pct:.1%} of equity",
        )
    ]

    sector = limits.sector_of(symbol)
    others, missing = _sector_gross_excluding(symbol, sector, snapshot, limits)
    caps.append(
        _Cap(
            name="sector",
            max_qty=sector_room(equity, limits.max_sector_pct, others, px, held),
            usage=lambda q: f"sector {sector} with {symbol} {(others + (held + q) * px) / equity:.1%}",
            limit=f"{limits.max_sector_pct:.1%} of equity",
        )
    )

    cash = snapshot.cash if not math.isnan(snapshot.cash) else 0.0
    if direction > 0:  # short sales bring cash in; only buys can overdraw
        caps.append(
            _Cap(
                name="cash",
                max_qty=cash / px,
                usage=lambda q: f"cash: {symbol} buy costs {q * px:,.2f}",
                limit=f"cash {cash:,.2f}",
            )
        )

    def allowed(step: float) -> float:
        return capped_quantity(equity, px, held, others, limits.max_position_pct, limits.max_sector_pct, cash, direction > 0, step)

    return caps, missing, allowed


def _sector_gross_excluding(
    symbol: str, sector: str, snapshot: PortfolioSnapshot, limits: RiskLimits
) -> tuple[float, list[str]]:
    """Gross value of the other holdings in `sector`; a holding we cannot value blocks new risk."""
    gross = 0.0
    missing: list[str] = []
    for other, qty in snapshot.positions.items():
        if other == symbol or qty == 0 or limits.sector_of(other) != sector:
            continue
        other_px = snapshot.prices.get(other)
        if other_px is None or not (math.isfinite(other_px) and other_px > 0) or not math.isfinite(qty):
            missing.append(f"no price for {other} to value sector {sector} before adding {symbol}")
            continue
        gross += abs(qty) * other_px
    return gross, missing


def _result(
    symbol: str, qty: float, *, reasons: list[str] | None = None, violations: list[str] | None = None
) -> RiskAssessment:
    qty = max(float(qty), 0.0)
    return RiskAssessment(
        symbol=symbol,
        approved=qty > 0,
        quantity=qty,
        reasons=reasons or [],
        hard_violations=violations or [],
    )


def _fmt(q: float) -> str:
    if math.isfinite(q) and q.is_integer() and abs(q) < 1e15:
        return str(int(q))
    return f"{q:.6g}"
