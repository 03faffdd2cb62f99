"""The portfolio as a replay of the ledger: cash and positions are never stored, only derived.

Average-cost accounting per symbol, positions signed (short < 0):
- a fill in the direction of the position (or opening one) moves the average cost to the
  quantity-weighted mean of the old average and the fill price;
- a fill against the position realizes `(price - avg_cost) * closed_qty * sign(position)`; the
  average cost of what remains is unchanged;
- a fill through zero realizes the closed part and opens the rest at the fill price.
Cash moves by `-signed_qty * price - commission`. Commissions are tracked apart: `realized_pnl` is
the trading result before commissions (net = `realized_pnl - commissions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trading.events import Event, EventType
from trading.ledger.store import Ledger

REPLAYED = (EventType.DEPOSIT, EventType.FILL)
_DEPOSIT, _FILL = EventType.DEPOSIT.value, EventType.FILL.value
_REL_EPS = 1e-9  # |position| below this fraction of the quantities involved is flat (float residue)


@dataclass
class Portfolio:
    cash: float = 0.0
    positions: dict[str, float] = field(default_factory=dict)  # symbol -> signed quantity; flat ones removed
    avg_cost: dict[str, float] = field(default_factory=dict)  # symbol -> average entry price of the position
    realized_pnl: float = 0.0  # before commissions
    commissions: float = 0.0
    fills: int = 0

    def copy(self) -> Portfolio:
        return Portfolio(self.cash, dict(self.positions), dict(self.avg_cost), self.realized_pnl, self.commissions, self.fills)

    def apply_deposit(self, amount: float) -> None:
        """Cash in (a negative amount is a withdrawal)."""
        self.cash += amount

    def apply_fill(self, symbol: str, signed_qty: float, price: float, commission: float = 0.0) -> None:
        if signed_qty == 0:
            raise ValueError(f"fill of zero quantity in {symbol}")
        self.cash -= signed_qty * price + commission
        self.commissions += commission
        self.fills += 1
        pos = self.positions.get(symbol, 0.0)
        new = pos + signed_qty
        if pos == 0.0 or (pos > 0) == (signed_qty > 0):  # open or add
            self.avg_cost[symbol] = (self.avg_cost.get(symbol, 0.0) * pos + price * signed_qty) / new
            self.positions[symbol] = new
            return
        avg = self.avg_cost[symbol]
        sign = 1.0 if pos > 0 else -1.0
        if abs(new) <= _REL_EPS * max(abs(pos), abs(signed_qty)):  # closed exactly
            self.realized_pnl += (price - avg) * abs(pos) * sign
            del self.positions[symbol], self.avg_cost[symbol]
        elif (new > 0) == (pos > 0):  # reduced
            self.realized_pnl += (price - avg) * abs(signed_qty) * sign
            self.positions[symbol] = new
        else:  # through zero: close all, open the rest at the fill price
            self.realized_pnl += (price - avg) * abs(pos) * sign
            self.positions[symbol] = new
            self.avg_cost[symbol] = price

    def unrealized_pnl(self, marks: Mapping[str, float]) -> float:
        """Open positions at `marks`; a symbol without a mark counts at its average cost (zero)."""
        return sum((marks.get(s, self.avg_cost[s]) - self.avg_cost[s]) * q for s, q in self.positions.items())

    def equity(self, marks: Mapping[str, float]) -> float:
        """Cash plus positions at `marks` (a missing mark values the position at its average cost)."""
        return self.cash + sum(q * marks.get(s, self.avg_cost[s]) for s, q in self.positions.items())

    def snapshot(self, marks: Mapping[str, float] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cash": self.cash,
            "positions": dict(self.positions),
            "avg_cost": dict(self.avg_cost),
            "realized_pnl": self.realized_pnl,
            "commissions": self.commissions,
            "fills": self.fills,
        }
        if marks is not None:
            out["unrealized_pnl"] = self.unrealized_pnl(marks)
            out["equity"] = self.equity(marks)
        return out

    def apply_payload(self, type_: str, payload: Mapping[str, Any]) -> None:
        """One DEPOSIT (`{"amount"}`) or FILL (`Fill.model_dump(mode="json")`) payload; others ignored."""
        if type_ == _FILL:
            qty = float(payload["quantity"])
            self.apply_fill(
                payload["symbol"],
                qty if payload["side"] == "buy" else -qty,
                float(payload["price"]),
                float(payload.get("commission", 0.0)),
            )
        elif type_ == _DEPOSIT:
            self.apply_deposit(float(payload["amount"]))


def replay_portfolio(
    ledger_or_events: Ledger | Iterable[Event], *, until_seq: int | None = None, run_id: str | None = None
) -> Portfolio:
    """The portfolio after the DEPOSIT and FILL events, in order (up to `until_seq`, of `run_id` only).

    From a `Ledger`, only (type, payload) of those two types are streamed from one cursor, without
    building `Event` models; when this ledger already has a projection (`trading.ledger.projections`,
    made by the cycle's first read), its portfolio is caught up and copied instead: no second pass.
    `until_seq` needs a Ledger (plain events carry no seq).
    """
    portfolio = Portfolio()
    apply = portfolio.apply_payload
    if isinstance(ledger_or_events, Ledger):
        if until_seq is None and run_id is None:
            from trading.ledger.projections import cached  # it imports this module

            projection = cached(ledger_or_events)
            if projection is not None:
                return projection.portfolio.copy()
        for type_, payload in ledger_or_events.payloads(REPLAYED, run_id=run_id, until_seq=until_seq):
            apply(type_, payload)
        return portfolio
    if until_seq is not None:
        raise ValueError("until_seq needs a Ledger: plain events have no seq")
    for event in ledger_or_events:
        if event.type in REPLAYED and (run_id is None or event.run_id == run_id):
            apply(event.type.value, event.payload)
    return portfolio
