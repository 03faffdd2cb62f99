"""The session controls' rules: what one trading step may send, for the live executor and the backtest.

The live path (`trading.risk`'s gate, `trading.safety`, `trading.execution.Executor.execute`) and the
backtest with limits (`backtests.order_sim`) apply the same controls of `trading.risk.RiskLimits`
at each step:
- **reducing** (`reduces`): an order that trades against the position held; from flat nothing
  reduces (a sell from flat opens a short: new risk, held by whatever blocks new risk);
- **daily loss**: from the first mark of a session at or below the session's opening mark (its
  first) less `daily_loss_limit_pct`, no new risk until the next session (`daily_loss_hit`);
- **drawdown**: from the first mark at or below the peak mark less `max_drawdown_pct`, no new risk
  (live: halted until a person resumes; `drawdown_hit`);
- **trades per day**: every order sent in the session counts (entries, exits, the flatten's
  closes); an entry is refused once `max_trades_per_day` have been sent (`may_send`, `trades_spent`);
- **trading window** (`backtests.window`): entries only from the open (+ `window_open_delay_min`)
  until `flatten_before_close_min` before the close; from then on (`closing`) every position is
  closed once by the flatten and a strategy's own exits are left to it.
Exits always go through otherwise: no control may trap the book in a position. A breaker measured
against a mark that is not positive (none yet, or an account already at or below zero) cannot trip:
a fraction of it means nothing, and the hard limits refuse new risk at such an equity anyway.

Plain Python on purpose: the backtest compiles these very functions with numba, as it does
`strategies.brackets` and `strategies.entries`, and the live path calls them as they are (through
the module, so tests/trading/test_one_rule_controls.py can swap one and see both paths follow).
"""

from __future__ import annotations


def reduces(held: float, side: float) -> bool:
    """Whether an order trading on `side` (> 0 buys, < 0 sells) reduces the signed position `held`:
    it trades against it. Flat (0, -0.0) or unknown (NaN) holds nothing to reduce."""
    return held * side < 0.0


def daily_loss_hit(equity: float, opening: float, limit_pct: float) -> bool:
    """Whether a mark of `equity` trips the daily loss limit against the session's `opening` mark
    (none yet, or not positive: it cannot)."""
    return opening > 0.0 and equity <= opening * (1.0 - limit_pct)


def drawdown_hit(equity: float, peak: float, limit_pct: float) -> bool:
    """Whether a mark of `equity` trips the drawdown breaker against the `peak` mark (none yet, or
    not positive: it cannot)."""
    return peak > 0.0 and equity <= peak * (1.0 - limit_pct)


def may_send(reducing: bool, closing: bool, blocked: bool, trades: int, max_trades: int) -> bool:
    """Whether a step sends one decided order. An order that reduces a position goes, unless the
    window's flatten is closing the book (`closing`: it would be a second exit); one that adds risk
    goes only when nothing blocks new risk (`blocked`: a halt, the daily loss limit, outside the
    window) and fewer than `max_trades` orders were sent in the session (`trades`, this step's
    orders before it included)."""
    if reducing:
        return not closing
    return not blocked and trades < max_trades


def trades_spent(trades: int, max_trades: int) -> bool:
    """Whether the session's count alone refuses new risk after `trades` orders: `may_send` for an
    entry nothing else blocks (read through the module, so the count has one rule)."""
    return not may_send(False, False, False, trades, max_trades)
