"""The safety controls' state, read from the ledger, and the trading window, read from the calendar.

Every control reads `RiskLimits` (the pipeline file's `limits`), the same object the hard limits use:
State is read from the ledger's projection (`trading.ledger.projections`: one pass, caught up with
the new events on each read), never by replaying the ledger per question.
- **Marks**: each step records the account's equity as a reconciliation event stamped with the run's
  `now` and its exchange session (the exchange-local date of `now`). The session's opening equity is
  the first mark of that session, the peak the highest mark; both count from the last `resume`.
- **Daily loss**: equity at or below the session's opening equity less `daily_loss_limit_pct` trips
  once per session and blocks new risk until the next session (or a resume).
- **Drawdown**: equity at or below the peak less `max_drawdown_pct` halts, like the kill switch,
  until an explicit resume (a peak that is not positive cannot trip it, as the daily loss's opening).
- **Trades per day**: orders sent in the session at or over `max_trades_per_day` block new risk.
- **Window**: entries from the open (+ `window_open_delay_min`) until `flatten_before_close_min`
  before the close, half days included; from then on positions are flattened (`flatten_at_close`).
Every trip is an intervention event. Exits always go through.
The rules themselves are the backtest's (`strategies.controls`, `backtests.window`), called here, so
the live step and the backtest cannot drift apart; this module adds the ledger's state and the reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from backtests import window as calendar_window
from lake.calendar import get_calendar
from strategies import controls
from trading.events import Event, EventType
from trading.ledger.projections import HALTS, SafetyState, project
from trading.models import Mode
from trading.risk import RiskLimits

log = logging.getLogger(__name__)

__all__ = ["HALTS", "EventLog", "Safety", "SafetyState", "flatten_due", "outside_window", "read_state", "session_of", "window"]

_TYPES = [EventType.INTERVENTION.value, EventType.RECONCILIATION.value, EventType.ORDER_SUBMITTED.value]


class EventLog(Protocol):
    def emit(self, event: Event) -> None: ...

    def events(self, *, run_id: str | None = None, types: Iterable[str] | None = None, symbol: str | None = None) -> Iterable[Event]: ...


def session_of(now: datetime, limits: RiskLimits) -> date:
    """The exchange-local date of `now`: the session its marks, trades and daily loss belong to."""
    return calendar_window.session_of(now, limits.exchange)


def window(now: datetime, limits: RiskLimits) -> tuple[datetime, datetime, datetime] | None:
    """(entries from, entries until = flatten at, close) of `now`'s session; None on a day without one."""
    return calendar_window.trading_window(
        session_of(now, limits), limits.exchange, limits.window_open_delay_min, limits.flatten_before_close_min
    )


def outside_window(now: datetime, limits: RiskLimits) -> str | None:
    """Why an entry at `now` is refused by the trading window, else None."""
    bounds = window(now, limits)
    tz = get_calendar(limits.exchange).tz
    local = now.astimezone(tz)
    if bounds is None:
        return f"outside the trading window: {local:%Y-%m-%d} is not a {limits.exchange} session"
    start, end, _close = bounds
    if calendar_window.may_enter(now, start, end):
        return None
    return f"outside the trading window {start.astimezone(tz):%H:%M}-{end.astimezone(tz):%H:%M} {tz.key} on {local:%Y-%m-%d} (now {local:%H:%M})"


def flatten_due(now: datetime, limits: RiskLimits) -> bool:
    """From `flatten_before_close_min` before the close (and on a day without a session), when configured."""
    if not limits.flatten_at_close:
        return False
    bounds = window(now, limits)
    return bounds is None or calendar_window.flatten_from(now, bounds[1])


def read_state(ledger: EventLog, session: date) -> SafetyState:
    """The safety state as of `session`, from the ledger's projection (one pass, kept up to date)."""
    return project(ledger).safety(session)


@dataclass
class Safety:
    """The controls that read the ledger: marks, breakers, halts and resumes, as of the run's `now`."""

    ledger: EventLog
    limits: RiskLimits
    now: datetime
    run_id: str
    mode: Mode
    session: date = field(init=False)

    def __post_init__(self) -> None:
        self.session = session_of(self.now, self.limits)

    def emit(self, type_: EventType, payload: dict[str, Any], *, symbol: str | None = None, as_of: datetime | None = None, event_id: str | None = None) -> None:
        extra = {"event_id": event_id} if event_id else {}
        if type_.value in _TYPES:  # what the state is read from carries its session
            payload = {**payload, "session": self.session.isoformat()}
        self.ledger.emit(Event(type=type_, run_id=self.run_id, mode=self.mode, symbol=symbol, as_of=as_of or self.now, payload=payload, **extra))

    def intervene(self, kind: str, reason: str, **details: Any) -> None:
        log.warning("intervention %s: %s", kind, reason)
        self.emit(EventType.INTERVENTION, {"kind": kind, "reason": reason, **details})

    def state(self) -> SafetyState:
        return read_state(self.ledger, self.session)

    def halted(self) -> str | None:
        return self.state().halted

    def mark(self, payload: dict[str, Any]) -> None:
        """The account as reconciled (`ok`, `cash`, `equity`, ...): a mark for the breakers."""
        self.emit(EventType.RECONCILIATION, payload)

    def check_breakers(self, equity: float) -> list[str]:
        """Records a trip of the drawdown breaker, the daily loss limit or the trades per day; returns them."""
        state, lim = self.state(), self.limits
        trips = []
        peak, opening = state.peak_equity or 0.0, state.session_open_equity or 0.0  # no mark yet: cannot trip
        if state.halted is None and controls.drawdown_hit(equity, peak, lim.max_drawdown_pct):
            trips.append(("drawdown", f"drawdown {1 - equity / peak:.2%} >= {lim.max_drawdown_pct:.2%} from the peak {peak:,.2f}: halted until resumed"))
        if state.daily_loss is None and controls.daily_loss_hit(equity, opening, lim.daily_loss_limit_pct):
            trips.append(("daily_loss", f"daily loss {1 - equity / opening:.2%} >= {lim.daily_loss_limit_pct:.2%} of the session's opening equity {opening:,.2f}: no new risk until the next session"))
        if "trades_per_day" not in state.tripped_today and controls.trades_spent(state.trades_today, lim.max_trades_per_day):
            trips.append(("trades_per_day", f"{state.trades_today} orders in the session >= {lim.max_trades_per_day}: no new risk until the next session"))
        for kind, reason in trips:
            self.intervene(kind, reason, equity=equity)
        return [f"{kind}: {reason}" for kind, reason in trips]

    def resume(self, who: str, reason: str = "") -> None:
        from trading.execution import ExecutionError

        state = self.state()
        if state.halted is None and state.daily_loss is None:
            raise ExecutionError("trading is not halted: nothing to resume")
        self.intervene("resume", reason or f"resumed by {who}", by=who)
