"""Each session control's rule lives in one place, called by the live step and by the backtest.

Each rule (`strategies.controls`: what reduces a position, the daily loss, the drawdown breaker, what
a step may send; `backtests.window`: a session's trading window, an entry inside it, the flatten
after it) is swapped for a different one before anything imports it, in a fresh interpreter (the
backtest compiles the controls into its order loop at import, so a patch in this process would not
reach it; numba's JIT is off there, so no kernel cached with the real rule loads). Then the simulated
paper session (the live step per bar: `trading.risk`'s gate, `trading.safety`, `trading.execution`)
and `run_backtest(..., limits=...)` must both follow the swapped rule: they make the same orders as
each other, and not the orders of the real rule. A path that kept its own copy of a rule would
ignore the swap and part from the other.

And on a grid of inputs, boundaries included, every live path answers as the shared rule does: the
hard limits' gate (`trading.risk.assess`), the breakers (`trading.safety.Safety.check_breakers`) and
the executor (`trading.execution.Executor`).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Swapped rules (module.function: replacement): each refuses more than the real one (the hard
# limits' gate in `trading.risk` reads the same rules, so it refuses with them).
SWAPS = {
    # what a step may send: at most 3 orders a session, whatever `max_trades_per_day` says
    "strategies.controls.may_send": "lambda reducing, closing, blocked, trades, max_trades: "
    "(not closing) if reducing else (not blocked and trades < 3)",
    # the daily loss limit trips on any mark once the session has an opening one
    "strategies.controls.daily_loss_hit": "lambda equity, opening, limit_pct: opening > 0.0",
    # the drawdown breaker trips at the first mark below the peak, whatever `max_drawdown_pct` says
    "strategies.controls.drawdown_hit": "lambda equity, peak, limit_pct: peak > 0.0 and equity < peak",
    # flat counts as a position to reduce: an entry from flat is an exit of nothing, so none opens
    "strategies.controls.reduces": "lambda held, side: held * side <= 0.0",
    # the trading window opens 20 minutes after the open + delay
    "backtests.window.session_window": "lambda open_, close, delay, flatten: "
    "(open_ + timedelta(minutes=delay + 20), close - timedelta(minutes=flatten), close)",
    # an entry only from 20 minutes into the window
    "backtests.window.may_enter": "lambda now, start, end: (start <= now - timedelta(minutes=20)) & (now < end)",
    # the window ends (and the flatten is due) six hours before its end: 14:55 UTC on a 16:00 close
    "backtests.window.flatten_from": "lambda now, end: now >= end - timedelta(hours=6)",
}


def orders_under(swap: str | None) -> dict[str, Any]:
    """The session's and the backtest's orders (ts, symbol, side, quantity) on a morning of minute
    bars where sma_cross 3/10 signals often, with the rule `swap` (a key of `SWAPS`) replaced before
    any import of it. Runs in the interpreter that calls it."""
    if swap is not None:
        module, name = swap.rsplit(".", 1)
        rule = eval(SWAPS[swap], {"timedelta": timedelta})  # noqa: S307 - the test's own constants
        setattr(importlib.import_module(module), name, rule)
    from strategies.builtin import SMA_CROSS
    from tests.trading.paper_vs_backtest import OPEN, Setup, minute_bars, order_rows
    from trading.analytics import fills_frame
    from trading.risk import RiskLimits

    bars = minute_bars(
        (datetime(2024, 11, 27, 14, 30, tzinfo=UTC), datetime(2024, 11, 27, 15, 30, tzinfo=UTC))
    )
    limits = RiskLimits(**{**OPEN, "daily_loss_limit_pct": 0.5})
    params = SMA_CROSS.params(fast=3, slow=10, fraction=0.5)
    both = Setup(bars, datetime(2024, 11, 27, 14, 45, tzinfo=UTC), limits, params).both()

    def rows(frame: Any, size: str) -> list[list[Any]]:
        return [[ts.isoformat(), s, side, q] for ts, s, side, q in order_rows(frame, size)]

    return {
        "session": rows(fills_frame(both.session.broker.fills), "quantity"),
        "backtest": rows(both.backtest.orders, "size"),
    }


def _in_fresh_interpreter(swap: str) -> dict[str, Any]:
    code = (
        f"import json, tests.trading.test_one_rule_controls as t; print(json.dumps(t.orders_under({swap!r})))"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    got = orders_under(None)
    assert got["session"] == got["backtest"] and len(got["session"]) > 6  # the real rule: paper = backtest
    return got


@pytest.mark.parametrize("swap", list(SWAPS))
def test_the_step_and_the_backtest_both_follow_the_shared_rule(swap: str, real: dict[str, Any]) -> None:
    got = _in_fresh_interpreter(swap)
    assert got["backtest"] != real["backtest"], "the backtest ignored the swapped rule"
    assert got["session"] != real["session"], "the live step ignored the swapped rule"
    assert got["session"] == got["backtest"]


LIMITS = {
    "daily_loss_limit_pct": 0.03,
    "max_drawdown_pct": 0.15,
    "max_trades_per_day": 2,
    "allow_short": True,
}
NOW = datetime(2024, 11, 27, 15, 0, tzinfo=UTC)  # 10:00 New York: inside the trading window


def _ledger() -> Any:
    from trading.ledger import Ledger

    return Ledger("sqlite:///:memory:")


def _executor(ledger: Any) -> Any:
    """An executor on an empty simulated account at `NOW`, under `LIMITS`."""
    from trading.brokers.simulated import SimulatedBroker
    from trading.execution import Executor
    from trading.models import Mode
    from trading.risk import RiskLimits

    return Executor(
        SimulatedBroker(cash=1e6),
        ledger,
        mode=Mode.SIMULATION,
        run_id="r",
        now=NOW,
        limits=RiskLimits(**LIMITS),
    )


def _gate(
    equity: float, *, opening: float | None = None, peak: float | None = None, trades: int = 0
) -> list[str]:
    """The hard limits' violations for a buy of one share from flat at 100 (`trading.risk.assess`)."""
    from trading.models import Action, PortfolioSnapshot, TradeProposal
    from trading.risk import RiskLimits, assess

    snapshot = PortfolioSnapshot(
        cash=1e6, equity=equity, start_of_day_equity=opening, peak_equity=peak, trades_today=trades
    )
    proposal = TradeProposal(symbol="AAPL", action=Action.BUY, confidence=1.0, rationale="grid", quantity=1.0)
    return assess(proposal, snapshot, RiskLimits(**LIMITS), price=100.0).hard_violations


# (the reference mark: the session's opening and the peak, the mark after it)
MARKS = [
    (100_000.0, 100_000.0 * (1.0 - 0.03)),  # exactly at the daily loss limit: trips
    (100_000.0, 100_000.0 * (1.0 - 0.03) + 0.01),
    (100_000.0, 100_000.0 * (1.0 - 0.15)),  # exactly at the drawdown limit: trips (both)
    (100_000.0, 100_000.0 * (1.0 - 0.15) + 0.01),
    (100_000.0, 100_000.0),
    (0.0, -5.0),  # a reference that is not positive never trips (the copies disagreed here)
    (0.0, 0.0),
    (-100.0, -100.0),
    (-100.0, -200.0),
]


@pytest.mark.parametrize(("reference", "equity"), MARKS)
def test_the_breakers_are_the_shared_rules_on_every_live_path(reference: float, equity: float) -> None:
    """The daily loss limit and the drawdown breaker: `Safety.check_breakers` (one mark of
    `reference`: the session's opening and the peak) and the hard limits' gate trip exactly when
    `strategies.controls` says, at the limit itself and on a mark that is not positive. Before the
    rules were shared the breaker halted on a negative peak (and the backtest on a zero one)."""
    from strategies import controls
    from trading.models import Mode
    from trading.risk import RiskLimits
    from trading.safety import Safety

    daily = controls.daily_loss_hit(equity, reference, 0.03)
    drawdown = controls.drawdown_hit(equity, reference, 0.15)
    with _ledger() as ledger:
        safety = Safety(ledger, RiskLimits(**LIMITS), NOW, "r", Mode.SIMULATION)
        safety.mark({"ok": True, "cash": reference, "equity": reference, "positions": {}})
        kinds = [trip.split(":")[0] for trip in safety.check_breakers(equity)]
        assert ("daily_loss" in kinds, "drawdown" in kinds) == (daily, drawdown)
        assert (safety.halted() is not None) is drawdown
    gate = " ".join(_gate(equity, opening=reference, peak=reference))
    assert ("daily loss limit" in gate, "drawdown breaker" in gate) == (daily, drawdown)
    assert (daily, drawdown) == (
        reference > 0 and equity <= reference * 0.97,
        reference > 0 and equity <= reference * 0.85,
    )


@pytest.mark.parametrize("trades", [0, 1, 2, 3])
def test_the_trades_per_day_is_the_shared_rule_on_every_live_path(trades: int) -> None:
    """The count: with 2 a day the third order is refused, by the hard limits' gate, the breaker and
    the executor alike (`strategies.controls.trades_spent`, which is `may_send`'s)."""
    from strategies import controls
    from trading.brokers.base import OrderRequest

    spent = controls.trades_spent(trades, 2)
    assert spent is (trades >= 2) is (not controls.may_send(False, False, False, trades, 2))
    assert ("trades per day" in " ".join(_gate(100_000.0, trades=trades))) is spent
    with _ledger() as ledger:
        executor = _executor(ledger)
        for k in range(trades):
            executor._send(
                OrderRequest(client_order_id=f"o{k}", symbol="AAPL", side="buy", quantity=1.0), NOW
            )
        assert executor.safety.state().trades_today == trades
        assert (
            "trades_per_day" in [t.split(":")[0] for t in executor.safety.check_breakers(100_000.0)]
        ) is spent
        assert (executor._trades_spent(trades) is not None) is spent


@pytest.mark.parametrize("held", [-5.0, -1e-9, -0.0, 0.0, 1e-9, 5.0])
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_what_reduces_a_position_is_the_shared_rule_on_every_live_path(held: float, side: str) -> None:
    """An order reduces a position when it trades against it (`strategies.controls.reduces`): the
    hard limits pass it as risk-reducing, and a halted executor sends it (reduce-only, without a
    bracket) while it holds the rest. Flat reduces nothing: a sell from flat while halted is a new
    short, held like any entry."""
    from strategies import controls
    from trading.agents.rules import reduces_position
    from trading.models import Action, Decision, PortfolioSnapshot, Side, TradeProposal, Verdict
    from trading.risk import RiskLimits, assess

    reducing = controls.reduces(held, 1.0 if side == "buy" else -1.0)
    assert reducing is (held * (1.0 if side == "buy" else -1.0) < 0)
    action = Action.BUY if side == "buy" else Action.SELL
    proposal = TradeProposal(
        symbol="AAPL", action=action, confidence=1.0, rationale="grid", quantity=1.0, entry=100.0
    )
    snapshot = PortfolioSnapshot(cash=1e6, equity=1e6, positions={"AAPL": held}, prices={"AAPL": 100.0})
    assert (
        "risk-reducing" in assess(proposal, snapshot, RiskLimits(**LIMITS), fractional=True).reasons
    ) is reducing
    assert reduces_position(proposal, held) is reducing  # the agents' copy (trading/agents/rules.py) agrees

    with _ledger() as ledger:
        executor = _executor(ledger)
        executor.kill_switch("grid")  # halted: only reducing orders go
        decision = Decision(
            run_id="r",
            strategy="s",
            symbol="AAPL",
            decided_at=NOW,
            verdict=Verdict.EXECUTE,
            side=Side(side),
            quantity=1.0,
            stop=90.0 if side == "buy" else 110.0,
        )
        sent = executor.execute([decision], {"AAPL": held})
        assert bool(sent) is reducing
        blocked = [e for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
        assert bool(blocked) is not reducing
        if reducing:
            [order] = [
                e.payload
                for e in ledger.events(types=["order_submitted"])
                if e.payload["client_order_id"] == sent[0].client_order_id
            ]
            assert order["reduce_only"] is True and order["stop"] is None
