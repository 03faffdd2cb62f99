"""From decisions to orders, safely: one order per decision, reconciliation first, and hard stops.

- Every order's client id is derived from its decision (strategy, symbol, bar, side), and brokers
  look an id up before sending, so a re-run, a retry or a crash between send and ledger write never
  sends a second order.
- `reconcile` runs before anything is sent: the broker is the source of truth; what the ledger does
  not know is recorded; if the broker cannot be read the run fails closed and sends nothing.
- Safety: a kill switch (cancel, flatten, halt until an explicit resume), a trading window with a
  flatten at its end, a daily loss limit and a drawdown breaker (halt until resumed). While halted,
  only orders that reduce a position go through. Every trip is an intervention event.
- Live trading needs an opt-in in config and in the environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from datetime import datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from trading.brokers.base import (
    Broker,
    BrokerError,
    Fill,
    OrderRequest,
    OrderState,
    UnknownOutcome,
    client_order_id,
)
from trading.events import Event, EventType
from trading.models import Decision, Mode, Side, Verdict

log = logging.getLogger(__name__)

LIVE_ENV = "QUANTLAKE_LIVE_TRADING"
LIVE_ENV_VALUE = "yes"
HALTING = {"kill_switch", "breaker"}


class ExecutionError(RuntimeError):
    """Execution cannot proceed safely; the message says why."""


class ReconciliationFailed(ExecutionError):
    """The broker could not be read before trading: nothing is sent (fail closed)."""


class EventLog(Protocol):
    def emit(self, event: Event) -> None: ...

    def events(self, *, run_id: str | None = None, types: Iterable[str] | None = None, symbol: str | None = None) -> Iterable[Event]: ...


class SafetyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = "America/New_York"
    window_start: time = time(9, 30)
    window_end: time = time(15, 55)
    flatten_at_end: bool = Field(True, description="No overnight positions: flatten when the window ends.")
    daily_loss_limit_pct: float = Field(0.03, gt=0, le=1)
    max_drawdown_pct: float = Field(0.15, gt=0, le=1)
    max_trades_per_day: int = Field(20, ge=1)


def check_mode(mode: Mode, *, live_opt_in: bool) -> None:
    """Live needs both the config flag and QUANTLAKE_LIVE_TRADING=yes; says so loudly either way."""
    if mode != Mode.LIVE:
        return
    if not live_opt_in or os.environ.get(LIVE_ENV) != LIVE_ENV_VALUE:
        raise ExecutionError(
            f"mode 'live' sends real orders with real money: set live_opt_in: true in config AND {LIVE_ENV}={LIVE_ENV_VALUE} "
            "in the environment (one of them is missing)"
        )
    log.warning("LIVE TRADING ENABLED: orders go to a real-money account")


def fill_event_id(fill_id: str) -> str:
    """The same fill always maps to the same event id, so recording it twice writes it once."""
    return hashlib.sha256(fill_id.encode()).hexdigest()[:32]


class Executor:
    def __init__(self, broker: Broker, ledger: EventLog, *, mode: Mode, run_id: str, safety: SafetyConfig | None = None) -> None:
        self.broker = broker
        self.ledger = ledger
        self.mode = mode
        self.run_id = run_id
        self.safety = safety or SafetyConfig()

    # -- events
    def _emit(self, type_: EventType, payload: dict[str, Any], *, symbol: str | None = None, as_of: datetime | None = None, event_id: str | None = None) -> None:
        extra = {"event_id": event_id} if event_id else {}
        self.ledger.emit(Event(type=type_, run_id=self.run_id, mode=self.mode, symbol=symbol, as_of=as_of, payload=payload, **extra))

    def intervene(self, kind: str, reason: str, *, as_of: datetime | None = None, **details: Any) -> None:
        log.warning("intervention %s: %s", kind, reason)
        self._emit(EventType.INTERVENTION, {"kind": kind, "reason": reason, **details}, as_of=as_of)

    # -- state read back from the ledger
    def halted(self) -> str | None:
        """The reason trading is halted (kill switch or breaker not yet resumed), else None."""
        reason = None
        for event in self.ledger.events(types=[EventType.INTERVENTION.value]):
            kind = event.payload.get("kind")
            if kind in HALTING:
                reason = f"{kind}: {event.payload.get('reason', '')}"
            elif kind == "resume":
                reason = None
        return reason

    def sent_order_ids(self) -> set[str]:
        """Client ids the broker confirmed (an unknown outcome is not confirmed: the broker is asked again)."""
        return {
            e.payload["client_order_id"]
            for e in self.ledger.events(types=[EventType.ORDER_SUBMITTED.value])
            if e.payload.get("broker_order_id")
        }

    def ensure_funded(self) -> None:
        """The ledger's portfolio starts from a deposit of the broker's cash on the first run."""
        if not any(True for _ in self.ledger.events(types=[EventType.DEPOSIT.value])):
            cash = self.broker.account().cash
            self._emit(EventType.DEPOSIT, {"amount": cash, "source": self.broker.name}, event_id=hashlib.sha256(f"deposit|{self.broker.name}".encode()).hexdigest()[:32])

    # -- reconciliation
    def reconcile(self, ledger_positions: dict[str, float]) -> dict[str, Any]:
        """Compares the broker (truth) with the ledger; records differences; raises if the broker is unreadable."""
        try:
            positions = self.broker.positions()
            open_orders = self.broker.open_orders()
            account = self.broker.account()
        except (BrokerError, OSError) as exc:
            self._emit(EventType.RECONCILIATION, {"ok": False, "error": str(exc)})
            raise ReconciliationFailed(f"cannot read {self.broker.name} before trading ({exc}); nothing was sent") from exc
        known = {e.payload["client_order_id"] for e in self.ledger.events(types=[EventType.ORDER_SUBMITTED.value])}
        unknown_orders = [o.model_dump(mode="json") for o in open_orders if o.client_order_id not in known]
        mismatches = {
            s: {"broker": positions.get(s, 0.0), "ledger": ledger_positions.get(s, 0.0)}
            for s in sorted(set(positions) | set(ledger_positions))
            if abs(positions.get(s, 0.0) - ledger_positions.get(s, 0.0)) > 1e-9
        }
        report = {"ok": True, "cash": account.cash, "equity": account.equity, "positions": positions, "unknown_orders": unknown_orders, "position_mismatches": mismatches}
        self._emit(EventType.RECONCILIATION, report)
        return report

    # -- orders
    def execute(self, decisions: Iterable[Decision], positions: dict[str, float], *, now: datetime | None = None) -> list[OrderState]:
        """Sends one order per EXECUTE decision not already sent; validation mode sends nothing."""
        if self.mode == Mode.VALIDATION:
            return []
        halted = self.halted()
        sent = self.sent_order_ids()
        in_window = now is None or self.in_window(now)
        states = []
        for d in decisions:
            if d.verdict != Verdict.EXECUTE or d.side is None or d.quantity <= 0:
                continue
            cid = client_order_id(d.strategy, d.symbol, d.decided_at, d.side)
            if cid in sent:
                continue  # this decision's order is already at the broker
            held = positions.get(d.symbol, 0.0)
            reducing = (d.side == Side.SELL and held > 0) or (d.side == Side.BUY and held < 0)
            if not reducing and (halted or not in_window):
                why = halted or f"outside the trading window {self.safety.window_start}-{self.safety.window_end} {self.safety.timezone}"
                self.intervene("blocked", why, as_of=d.decided_at, symbol=d.symbol, client_order_id=cid)
                continue
            levels = {"stop": d.stop, "target1": d.target1, "target2": d.target2} if d.side == Side.BUY else {}
            request = OrderRequest(
                client_order_id=cid, symbol=d.symbol, side=d.side, quantity=d.quantity, reduce_only=reducing, size=None if reducing else d.size, **levels
            )
            states.extend(self._send(request, d.decided_at))
        return states

    def _send(self, request: OrderRequest, as_of: datetime | None) -> list[OrderState]:
        try:
            state = self.broker.submit(request)
        except UnknownOutcome as exc:
            # Not confirmed: recorded without a broker id, so the next run asks the broker again.
            self._emit(EventType.ORDER_SUBMITTED, {**request.model_dump(mode="json"), "status": "unknown", "error": str(exc)}, symbol=request.symbol, as_of=as_of)
            return []
        except BrokerError as exc:
            self._emit(EventType.REJECTION, {**request.model_dump(mode="json"), "reason": str(exc)}, symbol=request.symbol, as_of=as_of)
            return []
        payload = {**request.model_dump(mode="json"), **state.model_dump(mode="json")}
        self._emit(EventType.ORDER_SUBMITTED, payload, symbol=request.symbol, as_of=as_of)
        if state.status.value == "rejected":
            self._emit(EventType.REJECTION, {"client_order_id": request.client_order_id, "reason": state.reason}, symbol=request.symbol, as_of=as_of)
        return [state]

    def record_fills(self, fills: Iterable[Fill]) -> int:
        count = 0
        for fill in fills:
            self._emit(EventType.FILL, fill.model_dump(mode="json"), symbol=fill.symbol, as_of=fill.ts, event_id=fill_event_id(fill.fill_id))
            count += 1
        return count

    # -- safety
    def in_window(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.safety.timezone)).time()
        return self.safety.window_start <= local < self.safety.window_end

    def kill_switch(self, reason: str) -> list[OrderState]:
        """Cancel everything, flatten everything, halt until `resume`."""
        self.intervene("kill_switch", reason)
        canceled = self.broker.cancel_all()
        closing = self.broker.close_all()
        for state in closing:
            self._emit(EventType.ORDER_SUBMITTED, state.model_dump(mode="json"), symbol=state.symbol)
        self._emit(EventType.CANCEL, {"canceled": canceled, "reason": reason})
        return closing

    def resume(self, who: str, reason: str = "") -> None:
        if self.halted() is None:
            raise ExecutionError("trading is not halted: nothing to resume")
        self.intervene("resume", reason or f"resumed by {who}", by=who)

    def check_breakers(self, equity: float, start_of_day_equity: float, peak_equity: float) -> str | None:
        """Trips the daily loss limit or the drawdown breaker (a halt) when crossed; returns the reason."""
        if self.halted():
            return None
        s = self.safety
        reason = None
        if start_of_day_equity > 0 and equity <= start_of_day_equity * (1 - s.daily_loss_limit_pct):
            reason = f"daily loss {1 - equity / start_of_day_equity:.2%} >= limit {s.daily_loss_limit_pct:.2%}"
        elif peak_equity > 0 and equity <= peak_equity * (1 - s.max_drawdown_pct):
            reason = f"drawdown {1 - equity / peak_equity:.2%} >= breaker {s.max_drawdown_pct:.2%}"
        if reason:
            self.intervene("breaker", reason, equity=equity)
        return reason

    def end_of_window(self, now: datetime) -> list[OrderState]:
        """At or after the window's end, flattens when configured (no overnight positions)."""
        local = now.astimezone(ZoneInfo(self.safety.timezone)).time()
        if not self.safety.flatten_at_end or local < self.safety.window_end or not self.broker.positions():
            return []
        self.intervene("flatten", f"end of trading window {self.safety.window_end} {self.safety.timezone}", as_of=now)
        closing = self.broker.close_all()
        for state in closing:
            self._emit(EventType.ORDER_SUBMITTED, state.model_dump(mode="json"), symbol=state.symbol, as_of=now)
        return closing
