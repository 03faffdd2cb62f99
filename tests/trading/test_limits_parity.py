"""Paper = backtest on minute bars where the session controls bind: the daily loss limit, the trades
per day and the trading window (its edges, and the flatten before a half day's 13:00 close). The
simulated session (the live step per bar) and `run_backtest(..., limits=SizingLimits.from_limits(...))`
make the same orders, fills and equity (1e-9), and lifting the control in the backtest changes its
orders, so each case is one where the control acts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from strategies.builtin import RSI_REVERSION, SMA_CROSS
from tests.trading.paper_vs_backtest import (
    COSTS,
    OPEN,
    Setup,
    minute_bars,
    order_rows,
)
from trading.analytics import fills_frame
from trading.risk import RiskLimits


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# case: (bars' spans, the first bar that may trade, the limits, the strategy's params, the control lifted to compare)
CASES: dict[
    str, tuple[list[tuple[datetime, datetime]], datetime, dict[str, Any], dict[str, Any], dict[str, Any]]
] = {
    "daily loss trips mid-session": (
        [(_utc(2024, 11, 27, 14, 30), _utc(2024, 11, 27, 16, 0))],
        _utc(2024, 11, 27, 14, 45),
        {"daily_loss_limit_pct": 0.002},
        {"fraction": 1.0},
        {"daily_loss_limit_pct": 1.0},
    ),
    "more signals than trades per day": (
        [(_utc(2024, 11, 27, 14, 30), _utc(2024, 11, 27, 15, 30))],
        _utc(2024, 11, 27, 14, 45),
        {"max_trades_per_day": 5},
        {"fraction": 0.5},
        {"max_trades_per_day": 1_000},
    ),
    "entries near both window edges, flatten 15 min before the close": (
        [
            (_utc(2024, 11, 27, 14, 30), _utc(2024, 11, 27, 15, 30)),
            (_utc(2024, 11, 27, 20, 0), _utc(2024, 11, 27, 21, 0)),
        ],
        _utc(2024, 11, 27, 14, 45),
        {"window_open_delay_min": 20, "flatten_before_close_min": 15},
        {"fraction": 0.5},
        {"window_open_delay_min": 0, "flatten_at_close": False},
    ),
    "half day 2024-11-29: flatten at 12:55 before its 13:00 close": (
        [
            (_utc(2024, 11, 29, 16, 40), _utc(2024, 11, 29, 18, 0)),
            (_utc(2024, 12, 2, 14, 30), _utc(2024, 12, 2, 15, 0)),
        ],
        _utc(2024, 11, 29, 17, 0),
        {},
        {"fraction": 0.5},
        {"flatten_at_close": False},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_where_a_session_control_binds_the_session_is_the_backtest_with_the_same_limits(case: str) -> None:
    spans, trade_from, control, raw, lifted = CASES[case]
    bars, params = minute_bars(*spans), SMA_CROSS.params(fast=3, slow=10, **raw)
    limits = RiskLimits(**{**OPEN, **control})
    setup = Setup(bars, trade_from, limits, params)
    both = setup.both()
    session, expected, kinds = both.session, both.backtest, both.interventions

    paper = fills_frame(session.broker.fills).sort("ts", "symbol", "side")
    backtest = expected.orders.sort("ts", "symbol", "side")
    assert paper.height == backtest.height > 5
    assert (
        paper.select("ts", "symbol", "side", "quantity").rows()
        == backtest.select("ts", "symbol", "side", "size").rows()
    )
    np.testing.assert_allclose(paper["price"].to_numpy(), backtest["price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(paper["commission"].to_numpy(), backtest["fees"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(
        session.equity["equity"].to_numpy(), expected.equity["equity"].to_numpy(), rtol=1e-9
    )

    # The control acted in the session, and lifting it changes the backtest's orders.
    acted = {
        "daily_loss_limit_pct": "daily_loss",
        "max_trades_per_day": "trades_per_day",
        "window_open_delay_min": "blocked",
        "flatten_before_close_min": "flatten",
    }
    for field in control or {"flatten_before_close_min": 5}:
        assert acted[field] in kinds, (field, kinds)
    free = setup.backtest(limits.model_copy(update=lifted))
    assert order_rows(free.orders, "size") != order_rows(expected.orders, "size")


def test_the_window_edges_and_the_half_day_flatten_in_the_backtests_orders() -> None:
    """Read off the backtest with the window: no fill before the open + delay has passed, the flatten
    closes every position at the bar after 15:45 (15 min before a 16:00 close) and after 12:55 on
    the half day, and nothing is held into the next session."""
    spans, trade_from, control, raw, _ = CASES[
        "entries near both window edges, flatten 15 min before the close"
    ]
    params = SMA_CROSS.params(fast=3, slow=10, **raw)
    bt = Setup(minute_bars(*spans), trade_from, RiskLimits(**{**OPEN, **control}), params).backtest()
    buys = bt.orders.filter(pl.col("side") == "buy")
    assert buys["ts"].min() >= _utc(2024, 11, 27, 14, 51)  # decided at 14:50 (09:50 New York) at the earliest
    late = bt.orders.filter(pl.col("ts") > _utc(2024, 11, 27, 20, 45))
    assert (
        late.height > 0
        and (late["ts"] == _utc(2024, 11, 27, 20, 46)).all()
        and (late["side"] == "sell").all()
    )

    spans, trade_from, _, raw, _ = CASES["half day 2024-11-29: flatten at 12:55 before its 13:00 close"]
    params = SMA_CROSS.params(fast=3, slow=10, **raw)
    bt = Setup(minute_bars(*spans), trade_from, RiskLimits(**OPEN), params).backtest()
    day = bt.orders.filter(pl.col("ts") < _utc(2024, 11, 30))
    late = day.filter(pl.col("ts") >= _utc(2024, 11, 29, 17, 55))
    assert late.height > 0 and (late["ts"] == _utc(2024, 11, 29, 17, 56)).all()
    held = (
        day.with_columns(
            signed=pl.when(pl.col("side") == "buy").then(pl.col("size")).otherwise(-pl.col("size"))
        )
        .group_by("symbol")
        .agg(pl.col("signed").sum())
    )
    assert (held["signed"] == 0).all()
    assert bt.equity.filter(pl.col("ts") == _utc(2024, 11, 29, 17, 59))["cash"].item() == pytest.approx(
        bt.equity.filter(pl.col("ts") == _utc(2024, 11, 29, 17, 59))["equity"].item(), abs=1e-9
    )


def test_long_short_fractional_with_every_control_at_once_the_session_is_the_backtest() -> None:
    """Shorts (rsi_reversion enters them from flat), fractional shares, the trades per day, an open
    delay and the half day's window together."""
    sim = COSTS.model_copy(update={"allow_short": True, "fractional": True})
    limits = RiskLimits(
        **{**OPEN, "allow_short": True, "max_trades_per_day": 12, "window_open_delay_min": 10}
    )
    spans, trade_from, *_ = CASES["half day 2024-11-29: flatten at 12:55 before its 13:00 close"]
    bars, params = (
        minute_bars(*spans),
        RSI_REVERSION.params(period=5, lower=35.0, upper=65.0, fraction=0.5, allow_short=True),
    )
    both = Setup(bars, trade_from, limits, params, strategy=RSI_REVERSION, sim=sim, fractional=True).both()
    session, expected, kinds = both.session, both.backtest, set(both.interventions)
    paper = fills_frame(session.broker.fills).sort("ts", "symbol", "side")
    backtest = expected.orders.sort("ts", "symbol", "side")
    assert paper.select("ts", "symbol", "side").rows() == backtest.select("ts", "symbol", "side").rows()
    assert paper.height > 5 and not (paper["quantity"] == paper["quantity"].floor()).all()
    np.testing.assert_allclose(paper["quantity"].to_numpy(), backtest["size"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        session.equity["equity"].to_numpy(), expected.equity["equity"].to_numpy(), rtol=1e-9
    )
    assert {"trades_per_day", "blocked"} <= kinds
    signed = pl.when(pl.col("side") == "buy").then(pl.col("size")).otherwise(-pl.col("size"))
    held = expected.orders.sort("ts").select(pl.col("symbol"), signed.cum_sum().over("symbol").alias("held"))
    assert held["held"].min() < 0  # a short was held


def _books(orders: pl.DataFrame) -> pl.DataFrame:
    """Each order with its symbol's position before and after it (shares, signed)."""
    signed = pl.when(pl.col("side") == "buy").then(pl.col("size")).otherwise(-pl.col("size"))
    after = orders.sort("ts", "symbol").with_columns(after=signed.cum_sum().over("symbol"))
    return after.with_columns(before=pl.col("after") - signed)


def test_the_drawdown_breaker_holds_new_shorts_from_flat_and_lets_exits_through() -> None:
    """Long/short (rsi_reversion) with a 0.2 % drawdown breaker that trips mid-morning: the session
    equals the backtest, and from the halt on every order is an exit (to flat). A sell from flat is a
    new short, not a reducing order (`strategies.controls.reduces`): without the breaker one is sent
    after that time, with it none is, on either path."""
    sim = COSTS.model_copy(update={"allow_short": True})
    limits = RiskLimits(**{**OPEN, "allow_short": True, "max_drawdown_pct": 0.002})
    bars = minute_bars((_utc(2024, 11, 27, 14, 30), _utc(2024, 11, 27, 16, 0)))
    params = RSI_REVERSION.params(period=5, lower=35.0, upper=65.0, fraction=0.5, allow_short=True)
    setup = Setup(bars, _utc(2024, 11, 27, 14, 45), limits, params, strategy=RSI_REVERSION, sim=sim)
    both = setup.both()

    paper = fills_frame(both.session.broker.fills)
    assert order_rows(paper, "quantity") == order_rows(both.backtest.orders, "size")
    np.testing.assert_allclose(
        both.session.equity["equity"].to_numpy(), both.backtest.equity["equity"].to_numpy(), rtol=1e-9
    )
    halted_at = both.first_at["drawdown"]  # a decision bar: its orders fill from the next one
    after = _books(both.backtest.orders).filter(pl.col("ts") > halted_at)
    assert after.height > 0 and (after["before"] != 0).all() and (after["after"] == 0).all()

    free = setup.backtest(limits.model_copy(update={"max_drawdown_pct": 1.0}))
    new_shorts = _books(free.orders).filter(
        (pl.col("ts") > halted_at) & (pl.col("before") == 0) & (pl.col("side") == "sell")
    )
    assert new_shorts.height > 0
