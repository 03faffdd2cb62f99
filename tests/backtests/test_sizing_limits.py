"""The backtest with the live path's hard sizing limits (`SizingLimits`): entries decided at the bar's
close on a running book in symbol order, cut by `strategies.entries.capped_quantity`, filled at the
next open. Hand-made bars, so each share can be counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, SizingLimits, simulate, to_market
from strategies.entries import capped_quantity


def _market(symbols: list[str], entry_bar: int = 1, n: int = 5, size: float = 1.0) -> pl.DataFrame:
    """Flat prices of 100; every symbol signals a long entry on `entry_bar` (fills at the next open)."""
    rows = []
    for k in range(n):
        for s in symbols:
            rows.append({
                "ts": datetime(2024, 1, 2, tzinfo=UTC) + timedelta(days=k), "symbol": s, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0,
                "entry_long": k == entry_bar, "exit_long": False, "entry_short": False, "exit_short": False, "size": size,
            })  # fmt: skip
    return pl.DataFrame(rows)


def _positions(symbols: list[str], limits: SizingLimits | None, size: float = 1.0) -> dict[str, float]:
    pf = simulate(to_market(_market(symbols, size=size)), BacktestConfig(brackets=False), limits)
    held = np.asarray(pf.assets())[-1]
    return dict(zip(symbols, held.tolist(), strict=True))


def test_the_position_cap_cuts_an_all_in_entry() -> None:
    assert _positions(["AAPL"], None) == {"AAPL": 1000.0}
    assert _positions(["AAPL"], SizingLimits(max_position_pct=0.2)) == {"AAPL": 200.0}


def test_the_sector_cap_is_shared_in_symbol_order_and_unmapped_symbols_are_their_own_sector() -> None:
    tech = {"AAPL": "tech", "MSFT": "tech"}
    limits = SizingLimits(max_position_pct=0.2, max_sector_pct=0.3, sector_map=tech)
    # AAPL decides first: 20 %; MSFT gets what the sector has left, 10 %; XOM is its own sector.
    assert _positions(["AAPL", "MSFT", "XOM"], limits, size=0.2) == {"AAPL": 200.0, "MSFT": 100.0, "XOM": 200.0}
    # Unmapped, each symbol is its own sector: no sector cap between them.
    assert _positions(["AAPL", "MSFT", "XOM"], SizingLimits(max_position_pct=0.2, max_sector_pct=0.3), size=0.2) == {"AAPL": 200.0, "MSFT": 200.0, "XOM": 200.0}


def test_a_full_book_holds_the_next_entry_and_an_uncut_entry_keeps_its_size() -> None:
    assert _positions(["AAPL", "MSFT"], SizingLimits(max_open_positions=1), size=0.25) == {"AAPL": 250.0, "MSFT": 0.0}
    # Limits that never bind change nothing: each entry is sized at its fill as without limits.
    assert _positions(["AAPL", "MSFT"], SizingLimits(), size=0.25) == _positions(["AAPL", "MSFT"], None, size=0.25) == {"AAPL": 250.0, "MSFT": 250.0}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((100_000.0, 100.0, 0.0, 0.0, 0.2, 0.3, 100_000.0, True, 1.0), 200.0),  # the position cap
        ((100_000.0, 100.0, 0.0, 25_000.0, 0.2, 0.3, 100_000.0, True, 1.0), 50.0),  # the sector cap, 25 % taken
        ((100_000.0, 100.0, 0.0, 0.0, 0.2, 0.3, 5_000.0, True, 1.0), 50.0),  # a buy's cash
        ((100_000.0, 100.0, 0.0, 0.0, 0.2, 0.3, 5_000.0, False, 1.0), 200.0),  # a short sale needs no cash
        ((100_000.0, 100.0, 150.0, 0.0, 0.2, 0.3, 100_000.0, True, 1.0), 50.0),  # 150 held already
        ((100_000.0, 300.0, 0.0, 0.0, 0.2, 0.3, 100_000.0, True, 1e-9), 66.666666666),  # fractional lots, rounded down
        ((100_000.0, 100.0, 0.0, 31_000.0, 0.2, 0.3, 100_000.0, True, 1.0), 0.0),  # no room
    ],
)
def test_capped_quantity(args: tuple[float, float, float, float, float, float, float, bool, float], expected: float) -> None:
    assert capped_quantity(*args) == pytest.approx(expected, abs=1e-9)


def test_an_uncut_entry_sized_at_its_fill_stays_within_the_position_cap() -> None:
    """Three symbols at 30 %, no sector map: the first two are cut to 20 % when decided; the third asks
    for 30 % of the cash left (18 %), is sent uncut and sized at its fill on the whole equity: the
    cap holds there too (it used to fill 300 shares, 30 %)."""
    symbols = ["AAPL", "JPM", "MSFT"]
    assert _positions(symbols, SizingLimits(max_position_pct=0.2), size=0.3) == dict.fromkeys(symbols, 200.0)


def test_a_gap_at_the_open_does_not_take_a_cut_entry_past_the_cap() -> None:
    """Cut to 200 shares (20 %) at the close of 100; the next bar opens at 110: the entry fills
    floor(20 % x 100,000 / 110) = 181 shares, not the 200 (22 %) decided."""
    bars = _market(["AAPL"]).with_columns(pl.when(pl.col("ts") == datetime(2024, 1, 4, tzinfo=UTC)).then(110.0).otherwise(pl.col("open")).alias("open"))
    pf = simulate(to_market(bars), BacktestConfig(brackets=False), SizingLimits(max_position_pct=0.2))
    assert np.asarray(pf.assets())[-1].tolist() == [181.0]
