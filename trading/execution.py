"""From decisions to orders, safely: one order per decision, reconciliation first, and hard stops.

- Every order's client id is derived from its decision (strategy, symbol, bar, side), and brokers
  look an id up before sending, so a re-run, a retry or a crash between send and ledger write never
  sends a second order.
- `reconcile` runs before anything is sent: the broker is the source of truth; what the ledger does
  not know is recorded; if the broker cannot be read the run fails closed and sends nothing.
- Safety (`trading.safety`, configured by the pipeline's `RiskLimits`): a kill switch (cancel,
  flatten, halt until an explicit resume), the trading window with a flatten before the close, the
  daily loss limit, the drawdown breaker and the trades per day. While any of them blocks new risk,
  only orders that reduce a position go through. Every trip is an intervention event.
- Live trading needs an opt-in in config and in the environment.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from strategies import controls
from trading.brokers.base import (
    Broker,
    BrokerError,
    Fill,
    FillCaps,
    OrderRequest,
    OrderState,
    UnknownOutcome,
    client_order_id,
)
from trading.brokers.simulated import SimulatedBroker
from trading.events import EventType
from trading.models import Decision, Mode, Side, Verdict
from trading.risk import RiskLimits
from trading.safety import EventLog, Safety, flatten_due, outside_window, window

log = logging.getLogger(__name__)

LIVE_ENV = "QUANTLAKE_LIVE_TRADING"
LIVE_ENV_VALUE = "yes"


def fill_caps(limits: RiskLimits, symbol: str) -> FillCaps:
    """The position and sector caps an entry in `symbol` carries to its fill (`OrderRequest.caps`)."""
    sector = limits.sector_of(symbol)
    peers = tuple(sorted(s for s in limits.sector_map if s != symbol and limits.sector_of(s) == sector))
    return FillCaps(max_position_pct=limits.max_position_pct, max_sector_pct=limits.max_sector_pct, sector=peers)


class ExecutionError(RuntimeError):
    """Execution cannot proceed safely; the message says why."""


class ReconciliationFailed(ExecutionError):
    """The broker could not be read before trading: nothing is sent (fail closed)."""


def check_mode(mode: Mode, *, live_opt_in: bool, live_confirmed: bool) -> None:
    """Live needs both the config flag and the environment's QUANTLAKE_LIVE_TRADING=yes (read by
    `orchestration.resources`, passed in as `live_confirmed`); says so loudly either way."""
    if mode != Mode.LIVE:
        return
    if not live_opt_in or not live_confirmed:
        raise ExecutionError(
            f"mode 'live' sends real orders with real money: set live_opt_in: true in config AND {LIVE_ENV}={LIVE_ENV_VALUE} "
            "in the environment (one of them is missing)"
        )
    log.warning("LIVE TRADING ENABLED: orders go to a real-money account")


def fill_event_id(fill_id: str) -> str:
    """The same fill always maps to the same event id, so recording it twice writes it once."""
    return hashlib.sha256(fill_id.encode()).hexdigest()[:32]


def _filling_broker(broker: Broker) -> object:
    """The broker that fills `broker`'s orders: itself, or for a pipeline's view of a shared account
    (`trading.brokers.split.PipelineBroker`) the account's broker, so a simulated one under a view
    keeps the sent-time fill and cancel rules too."""
    from trading.brokers.split import PipelineBroker  # split imports this module: resolved at call time

    return broker.broker if isinstance(broker, PipelineBroker) else broker


class Executor:
    """Sends orders for one step at the run's `now`, under the limits' controls (`trading.safety`)."""

    def __init__(
        self,
        broker: Broker,
        ledger: EventLog,
        *,
        mode: Mode,
        run_id: str,
        now: datetime,
        limits: RiskLimits | None = None,
        before_exit: Callable[[str], object] | None = None,
    ) -> None:
        self.broker = broker
        # Called with the symbol before a strategy's exit is sent: on Alpaca the trade manager's
        # resting exits reserve the shares, so they are released first (or the sell is refused).
        self.before_exit = before_exit
        self.ledger = ledger
        self.mode = mode
        self.run_id = run_id
        self.now = now
        if isinstance(simulated := _filling_broker(broker), SimulatedBroker):
            simulated.placed_at = now  # what it is sent now cannot fill at a bar that opened before now
        self.limits = limits or RiskLimits()
        self.safety = Safety(ledger, self.limits, now, run_id, mode)
        self.blocked: str | None = None  # why the last `execute` refused new risk

    def _emit(self, type_: EventType, payload: dict[str, Any], *, symbol: str | None = None, as_of: datetime | None = None, event_id: str | None = None) -> None:
        self.safety.emit(type_, payload, symbol=symbol, as_of=as_of, event_id=event_id)

    def intervene(self, kind: str, reason: str, **details: Any) -> None:
        self.safety.intervene(kind, reason, **details)

    def halted(self) -> str | None:
        """The reason trading is halted (kill switch or drawdown not yet resumed), else None."""
        return self.safety.halted()

    def sent_order_ids(self) -> set[str]:
        """Client ids the broker confirmed (an unknown outcome is not confirmed: the broker is asked again)."""
        return set(self.safety.state().sent_orders)

    # -- reconciliation
    def reconcile(self, ledger_positions: dict[str, float]) -> dict[str, Any]:
        """Compares the broker (truth) with the ledger; records differences and the mark; raises if the broker is unreadable."""
        try:
            positions = self.broker.positions()
            open_orders = self.broker.open_orders()
            account = self.broker.account()
        except (BrokerError, OSError) as exc:
            self._emit(EventType.RECONCILIATION, {"ok": False, "error": str(exc)})
            raise ReconciliationFailed(f"cannot read {self.broker.name} before trading ({exc}); nothing was sent") from exc
        known = self.safety.state().known_orders
        unknown_orders = [o.model_dump(mode="json") for o in open_orders if o.client_order_id not in known]
        mismatches = {
            s: {"broker": positions.get(s, 0.0), "ledger": ledger_positions.get(s, 0.0)}
            for s in sorted(set(positions) | set(ledger_positions))
            if abs(positions.get(s, 0.0) - ledger_positions.get(s, 0.0)) > 1e-9
        }
        report = {"ok": True, "source": self.broker.name, "cash": account.cash, "equity": account.equity, "positions": positions, "unknown_orders": unknown_orders, "position_mismatches": mismatches}
        self.safety.mark(report)
        return report

    # -- orders
    def execute(self, decisions: Iterable[Decision], positions: dict[str, float]) -> list[OrderState]:
        """Sends one order per EXECUTE decision not already sent; validation mode sends nothing.

        New risk is refused, with an intervention, while halted, after the session's daily loss,
        at the trades per day, or outside the trading window; exits always go through."""
        if self.mode == Mode.VALIDATION:
            return []
        state = self.safety.state()
        sent = set(state.sent_orders)
        trades = state.trades_today
        self.blocked = state.halted or state.daily_loss or self._trades_spent(trades) or outside_window(self.now, self.limits)
        closing = flatten_due(self.now, self.limits)  # the window's flatten closes positions: no exit twice
        states = []
        for d in decisions:
            if d.verdict != Verdict.EXECUTE or d.side is None or d.quantity <= 0:
                continue
            cid = client_order_id(d.strategy, d.symbol, d.decided_at, d.side)
            if cid in sent:
                continue  # this decision's order is already at the broker
            held = positions.get(d.symbol, 0.0)
            reducing = controls.reduces(held, 1.0 if d.side == Side.BUY else -1.0)  # a sell from flat opens a short
            # The backtest's rule (`strategies.controls.may_send`); here the ledger's state and the reason.
            if not controls.may_send(reducing, closing, bool(self.blocked), trades, self.limits.max_trades_per_day):
                if reducing:
                    continue  # the flatten is closing the book: no second exit
                self.blocked = self.blocked or self._trades_spent(trades) or "held by the session controls"
                self.intervene("blocked", self.blocked, symbol=d.symbol, client_order_id=cid, decided_at=d.decided_at.isoformat())
                continue
            # an entry's bracket, long or short (a short's stop above, targets below); an exit has none
            levels = {} if reducing else {"stop": d.stop, "target1": d.target1, "target2": d.target2}
            request = OrderRequest(
                client_order_id=cid, symbol=d.symbol, side=d.side, quantity=d.quantity, reduce_only=reducing, size=None if reducing else d.size,
                caps=None if reducing else fill_caps(self.limits, d.symbol), **levels,
            )  # fmt: skip
            if reducing and self.before_exit is not None:
                self.before_exit(d.symbol)
            out = self._send(request, d.decided_at)
            trades += len(out)
            states.extend(out)
        return states

    def _trades_spent(self, trades: int) -> str | None:
        """Why an entry is refused after `trades` orders in the session by the count alone, else None."""
        if not controls.trades_spent(trades, self.limits.max_trades_per_day):
            return None
        return f"trades_per_day: {trades} orders in the session {self.safety.session} >= {self.limits.max_trades_per_day}"

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
    def _close_all(self) -> list[OrderState]:
        sent = set(self.safety.state().sent_orders)
        closing = self.broker.close_all()
        for state in closing:
            if state.client_order_id in sent:
                continue  # a close still pending from an earlier flatten, kept by the broker: recorded once
            self._emit(EventType.ORDER_SUBMITTED, state.model_dump(mode="json"), symbol=state.symbol)
        return closing

    def kill_switch(self, reason: str) -> list[OrderState]:
        """Cancel everything, flatten everything, halt until `resume`."""
        self.intervene("kill_switch", reason)
        canceled = self.broker.cancel_all()
        closing = self._close_all()
        self._emit(EventType.CANCEL, {"canceled": canceled, "reason": reason})
        return closing

    def resume(self, who: str, reason: str = "") -> None:
        self.safety.resume(who, reason)

    def flatten_if_due(self) -> list[OrderState]:
        """From `flatten_before_close_min` before the close (half days too), closes every position."""
        if not flatten_due(self.now, self.limits) or not self.broker.positions() or "flatten" in self.safety.state().tripped_today:
            return []  # once a session: its orders are at the broker
        bounds = window(self.now, self.limits)
        when = f"{self.limits.flatten_before_close_min} min before the close {bounds[2].isoformat()}" if bounds else "no session today"
        self.intervene("flatten", f"end of the trading window ({when})")
        return self._close_all()
