"""Survivors of mutating backtests/order_sim.py (issue 18): the limits path's running book by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from backtests.engine import BacktestConfig, SizingLimits, simulate, to_market


def _held(opens: dict[str, float], size: float, limits: SizingLimits, shorts: frozenset[str] = frozenset()) -> dict[str, float]:
    """Shares held at the end: every symbol closes at 100 and signals an entry on bar 1 (short for
    `shorts`, else long), filled at bar 2's open (`opens`, per symbol; 100 elsewhere)."""
    rows = []
    for k in range(4):
        for s, gap_open in opens.items():
            o = gap_open if k == 2 else 100.0
            rows.append({
                "ts": datetime(2024, 1, 2, tzinfo=UTC) + timedelta(days=k), "symbol": s, "open": o, "high": max(o, 100.0) + 1.0,
                "low": min(o, 100.0) - 1.0, "close": 100.0, "entry_long": k == 1 and s not in shorts, "exit_long": False, "entry_short": k == 1 and s in shorts,
                "exit_short": False, "size": size,
            })  # fmt: skip
    pf = simulate(to_market(pl.DataFrame(rows)), BacktestConfig(brackets=False, allow_short=True), limits)
    return dict(zip(opens, np.asarray(pf.assets())[-1].tolist(), strict=True))


def test_the_running_book_spends_the_cash_of_each_entry_decided_before() -> None:
    """Of 100,000: AAPL asks for 600 shares (0.6 at 100), is cut to 500 by the 50 % cap and sent for
    500: the book's cash is then 50,000. MSFT asks for floor(0.6 x 50,000 / 100) = 300, under its cap
    of 500: uncut, it is sized at its fill, a gap down to 80: min(60,000, 50,000 free) / 80 = 625 (the
    cap at 80 is 625 too). A book that had not spent AAPL's cash would see MSFT ask for 600 and cut
    it to 500."""
    limits = SizingLimits(max_position_pct=0.5)
    assert _held({"AAPL": 100.0, "MSFT": 80.0}, 0.6, limits) == {"AAPL": 500.0, "MSFT": 625.0}


def test_a_short_entry_brings_its_proceeds_into_the_running_book() -> None:
    """AAPL's short is cut to 500 shares (50 % cap): the book's cash is then 150,000, so MSFT asks for
    900 and is cut to 500, sent for 500. Had the short been booked as a buy (cash 50,000), MSFT would
    ask for 300, go uncut and be sized at its fill at 80: 625."""
    limits = SizingLimits(max_position_pct=0.5)
    assert _held({"AAPL": 100.0, "MSFT": 80.0}, 0.6, limits, shorts=frozenset({"AAPL"})) == {"AAPL": -500.0, "MSFT": 500.0}


def test_entries_the_limits_cut_fill_in_order_of_their_value_at_the_fill() -> None:
    """Of 100,000 with a 49 % cap and 5 % fees: AAPL (close 100) is cut to 490 shares, MSFT (close 200)
    to 245. At the fill MSFT gaps to 199.9: its 48,975.5 fills before AAPL's 49,000 and takes its 245;
    the cash then buys AAPL (100,000 - 245 x 199.9 x 1.05) / 105 = 462.6 -> 462, not 490."""
    rows = []
    for k in range(4):
        for s, close in (("AAPL", 100.0), ("MSFT", 200.0)):
            o = 199.9 if (k == 2 and s == "MSFT") else close
            rows.append({
                "ts": datetime(2024, 1, 2, tzinfo=UTC) + timedelta(days=k), "symbol": s, "open": o, "high": close + 1.0,
                "low": o - 1.0, "close": close, "entry_long": k == 1, "exit_long": False, "entry_short": False, "exit_short": False,
                "size": 1.0,
            })  # fmt: skip
    pf = simulate(to_market(pl.DataFrame(rows)), BacktestConfig(brackets=False, fees_bps=500.0), SizingLimits(max_position_pct=0.49))
    assert np.asarray(pf.assets())[-1].tolist() == [462.0, 245.0]
