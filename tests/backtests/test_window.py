"""The backtest's trading window (`backtests.window.bar_controls`) is the live path's
(`trading.safety`: `outside_window`, `flatten_due`, `session_of`) at every instant: a normal day, a
holiday, the 13:00 half day after it, a Saturday, and the days around the March DST switch, with and
without an open delay, a longer flatten and the flatten switched off. And the session controls'
rules (`strategies.controls`) on their boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from backtests.window import bar_controls, trading_window
from strategies.controls import daily_loss_hit, may_send
from trading.risk import RiskLimits
from trading.safety import flatten_due, outside_window, session_of

DAYS = [date(2024, 11, 27), date(2024, 11, 28), date(2024, 11, 29), date(2024, 11, 30), date(2024, 3, 8), date(2024, 3, 11)]
CONFIGS = [
    {},
    {"window_open_delay_min": 20, "flatten_before_close_min": 15},
    {"window_open_delay_min": 5, "flatten_at_close": False},
]


def _instants() -> pl.Series:
    stamps = [datetime(d.year, d.month, d.day, 12, 0, tzinfo=UTC) + timedelta(minutes=5 * k) for d in DAYS for k in range(12 * 11)]
    return pl.Series("ts", stamps).cast(pl.Datetime("us", "UTC"))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_bar_controls_are_the_live_windows_at_every_instant(config: dict[str, object]) -> None:
    limits = RiskLimits(**config)  # type: ignore[arg-type]
    ts = _instants()
    got = bar_controls(ts, limits.exchange, limits.window_open_delay_min, limits.flatten_before_close_min, limits.flatten_at_close)
    stamps = ts.to_list()
    assert got.entry_ok.tolist() == [outside_window(now, limits) is None for now in stamps]
    assert got.flatten.tolist() == [flatten_due(now, limits) for now in stamps]
    assert got.session.tolist() == [(session_of(now, limits) - date(1970, 1, 1)).days for now in stamps]
    assert got.entry_ok.any() and not got.entry_ok.all()
    assert got.flatten.any() == limits.flatten_at_close


def test_the_half_day_window_ends_five_minutes_before_its_13_00_close() -> None:
    assert trading_window(date(2024, 11, 29), "XNYS", 0, 5) == (
        datetime(2024, 11, 29, 14, 30, tzinfo=UTC),
        datetime(2024, 11, 29, 17, 55, tzinfo=UTC),
        datetime(2024, 11, 29, 18, 0, tzinfo=UTC),
    )
    assert trading_window(date(2024, 11, 28), "XNYS", 0, 5) is None  # Thanksgiving


def test_daily_loss_trips_at_the_limit_and_not_before() -> None:
    assert daily_loss_hit(97_000.0, 100_000.0, 0.03)
    assert not daily_loss_hit(97_000.01, 100_000.0, 0.03)
    assert not daily_loss_hit(0.0, float("nan"), 0.03)  # no opening mark yet


@pytest.mark.parametrize(
    ("reducing", "closing", "blocked", "trades", "sent"),
    [
        (True, False, True, 99, True),  # an exit goes whatever blocks new risk
        (True, True, False, 0, False),  # the flatten is closing the book: no second exit
        (False, False, False, 4, True),
        (False, False, False, 5, False),  # the 5th order of the session was the last
        (False, False, True, 0, False),
    ],
)
def test_may_send(reducing: bool, closing: bool, blocked: bool, trades: int, sent: bool) -> None:
    assert may_send(reducing, closing, blocked, trades, 5) is sent
