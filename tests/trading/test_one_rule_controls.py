"""Each session control's rule lives in one place, called by the live step and by the backtest.

Each rule (`strategies.controls`: the daily loss, what a step may send; `backtests.window`: a
session's trading window, an entry inside it, the flatten after it) is swapped for a different one before anything imports it, in a fresh
interpreter (the backtest compiles the controls into its order loop at import, so a patch in this
process would not reach it; numba's JIT is off there, so no kernel cached with the real rule loads). Then the simulated paper session (the live step per
bar: `trading.safety`, `trading.execution`) and `run_backtest(..., limits=...)` must both follow
the swapped rule: they make the same orders as each other, and not the orders of the real rule.
A path that kept its own copy of a rule would ignore the swap and part from the other.
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

# Swapped rules (module.function: replacement): each refuses more than the real one, so the hard
# limits' own gate (`trading.risk`) never decides in its place.
SWAPS = {
    # what a step may send: at most 3 orders a session, whatever `max_trades_per_day` says
    "strategies.controls.may_send": "lambda reducing, closing, blocked, trades, max_trades: "
    "(not closing) if reducing else (not blocked and trades < 3)",
    # the daily loss limit trips on any mark once the session has an opening one
    "strategies.controls.daily_loss_hit": "lambda equity, opening, limit_pct: opening > 0.0",
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
    from backtests.engine import SizingLimits, run_backtest
    from lake.sources.synthetic import SyntheticSource
    from strategies.builtin import SMA_CROSS
    from trading.analytics import fills_frame
    from trading.brokers.simulated import SimConfig
    from trading.ledger import Ledger
    from trading.pipeline import PipelineConfig
    from trading.risk import RiskLimits
    from trading.session import backtest_config, run_simulated_session

    symbols = ["AAPL", "MSFT"]
    bars = SyntheticSource(seed=7).fetch(
        symbols, "1m", datetime(2024, 11, 27, 14, 30, tzinfo=UTC), datetime(2024, 11, 27, 15, 30, tzinfo=UTC)
    )
    trade_from = datetime(2024, 11, 27, 14, 45, tzinfo=UTC)
    params = SMA_CROSS.params(fast=3, slow=10, fraction=0.5)
    limits = RiskLimits(
        max_position_pct=1.0,
        max_sector_pct=1.0,
        daily_loss_limit_pct=0.5,
        max_drawdown_pct=1.0,
        max_trades_per_day=1_000,
    )
    costs = SimConfig(slippage_bps=2.0, commission_per_share=0.005)
    with Ledger("sqlite:///:memory:") as ledger:
        session = run_simulated_session(
            bars=bars,
            ledger=ledger,
            strategy=SMA_CROSS,
            params=params,
            pipeline=PipelineConfig(limits=limits),
            sim=costs,
            trade_from=trade_from,
        )
    backtest = run_backtest(
        bars,
        SMA_CROSS,
        params,
        backtest_config(costs, 100_000.0, "1m"),
        trade_from=trade_from,
        limits=SizingLimits.from_limits(limits, symbols),
    )

    def rows(frame: Any, size: str) -> list[list[Any]]:
        return [
            [ts.isoformat(), s, side, q]
            for ts, s, side, q in frame.sort("ts", "symbol", "side")
            .select("ts", "symbol", "side", size)
            .rows()
        ]

    return {
        "session": rows(fills_frame(session.broker.fills), "quantity"),
        "backtest": rows(backtest.orders, "size"),
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


@pytest.mark.parametrize(
    ("opening", "equity", "trips"), [(100_000.0, 97_000.0, True), (-100.0, -100.0, False), (0.0, -5.0, False)]
)
def test_the_live_daily_loss_is_the_shared_rule_on_any_opening_mark(
    opening: float, equity: float, trips: bool
) -> None:
    """Where the two copies differed: the live breaker tripped on a negative opening mark (a loss of
    nothing from -100 "is" 2 % of it); the shared rule never trips against a non-positive one."""
    from trading.ledger import Ledger
    from trading.models import Mode
    from trading.risk import RiskLimits
    from trading.safety import Safety

    with Ledger("sqlite:///:memory:") as ledger:
        safety = Safety(
            ledger,
            RiskLimits(daily_loss_limit_pct=0.03),
            datetime(2024, 11, 27, 15, 0, tzinfo=UTC),
            "r",
            Mode.SIMULATION,
        )
        safety.mark({"ok": True, "cash": opening, "equity": opening, "positions": {}})
        kinds = [trip.split(":")[0] for trip in safety.check_breakers(equity)]
    assert ("daily_loss" in kinds) is trips
