"""The screener's filters on hand-made daily bars: each filter, its boundaries, and point in time."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from lake.calendar import session_bounds, trading_days
from lake.errors import LakeError
from lake.schema import conform_bars
from lake.screener import ScreenerRules, chosen_symbols, screen, screener_path, write_screen

DAY = date(2024, 3, 15)  # a Friday; screened from the sessions before it
SESSIONS = trading_days(date(2024, 1, 2), date(2024, 3, 22))
BEFORE = [d for d in SESSIONS if d < DAY]


def _bars(symbol: str, closes: list[float], volume: float = 1000.0, days: list[date] | None = None) -> pl.DataFrame:
    days = days or BEFORE[-len(closes) :]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1d",
            "ts": [session_bounds(d)[0] for d in days],
            "open": closes, "high": closes, "low": closes, "close": closes,
            "volume": [volume] * len(closes),
        }
    )


def _frame(*parts: pl.DataFrame) -> pl.DataFrame:
    return conform_bars(pl.concat(parts))


def _chosen(frame: pl.DataFrame) -> list[str]:
    return sorted(frame.filter("chosen")["symbol"].to_list())


def _reason(frame: pl.DataFrame, symbol: str) -> str | None:
    return frame.filter(pl.col("symbol") == symbol)["reason"][0]


def test_default_rules_keep_every_symbol_with_bars() -> None:
    bars = _frame(_bars("AAA", [10.0] * 5), _bars("BBB", [500.0] * 30, volume=1.0))
    out = screen(bars, ["AAA", "BBB", "CCC"], DAY, ScreenerRules())
    assert _chosen(out) == ["AAA", "BBB"]
    assert _reason(out, "CCC") == "no daily bars before the day"


def test_liquidity_boundary_is_inclusive() -> None:
    # avg close*volume over the last 3 sessions: (10 + 20 + 30) * 100 / 3 = 2000; older sessions do not count
    bars = _frame(_bars("AAA", [1000.0, 10.0, 20.0, 30.0], volume=100.0))
    assert _chosen(screen(bars, ["AAA"], DAY, ScreenerRules(lookback=3, min_dollar_volume=2000.0))) == ["AAA"]
    out = screen(bars, ["AAA"], DAY, ScreenerRules(lookback=3, min_dollar_volume=2000.01))
    assert _chosen(out) == [] and (_reason(out, "AAA") or "").startswith("liquidity")


def test_price_range_on_the_last_close() -> None:
    bars = _frame(_bars("LOW", [50.0, 4.99]), _bars("MID", [1.0, 5.0]), _bars("TOP", [1.0, 100.0]), _bars("HIGH", [1.0, 100.01]))
    out = screen(bars, ["LOW", "MID", "TOP", "HIGH"], DAY, ScreenerRules(min_price=5.0, max_price=100.0))
    assert _chosen(out) == ["MID", "TOP"]
    assert _reason(out, "LOW") == "price: 4.99 < 5.00" and _reason(out, "HIGH") == "price: 100.01 > 100.00"


def test_momentum_over_the_lookback_and_too_short_a_history() -> None:
    # 2 sessions back: 100 -> 110 is +10%; 100 -> 109 is +9%
    bars = _frame(_bars("UP", [100.0, 105.0, 110.0]), _bars("FLAT", [100.0, 120.0, 109.0]), _bars("NEW", [100.0, 200.0]))
    out = screen(bars, ["UP", "FLAT", "NEW"], DAY, ScreenerRules(lookback=2, min_momentum=0.10))
    assert _chosen(out) == ["UP"]
    assert out.filter(pl.col("symbol") == "UP")["score"][0] == pytest.approx(0.10)
    assert (_reason(out, "FLAT") or "").startswith("momentum: +9.00%")
    assert _reason(out, "NEW") == "momentum: fewer than 3 sessions of history"


def test_gap_needs_the_days_open_and_bounds_it() -> None:
    bars = _frame(_bars("AAA", [100.0]), _bars("BBB", [100.0]), _bars("CCC", [100.0]))
    rules = ScreenerRules(max_gap=0.02)
    out = screen(bars, ["AAA", "BBB", "CCC"], DAY, rules, opens={"AAA": 102.0, "BBB": 97.9})
    assert _chosen(out) == ["AAA"]
    assert (_reason(out, "BBB") or "").startswith("gap: -2.10%")
    assert _reason(out, "CCC") == "gap: no open of the day at the decision time"
    assert _chosen(screen(bars, ["AAA"], DAY, ScreenerRules(), opens={"AAA": 150.0})) == ["AAA"], "no gap rule: opens ignored"


def test_max_symbols_keeps_the_best_scores() -> None:
    bars = _frame(_bars("A", [100.0, 101.0]), _bars("B", [100.0, 103.0]), _bars("C", [100.0, 102.0]))
    out = screen(bars, ["A", "B", "C"], DAY, ScreenerRules(lookback=1, max_symbols=2))
    assert out["symbol"].to_list()[:2] == ["B", "C"] and _chosen(out) == ["B", "C"]
    assert _reason(out, "A") == "rank: beyond the top 2 scores"


def test_bars_of_the_day_and_later_never_matter() -> None:
    history = _bars("AAA", [10.0] * 21, volume=100.0)
    # the day's own bar and later ones: huge volume and a price jump that would pass every filter
    later = _bars("AAA", [1000.0, 1000.0, 1000.0], volume=1e9, days=[d for d in SESSIONS if d >= DAY][:3])
    rules = ScreenerRules(lookback=20, min_dollar_volume=5000.0, min_price=50.0, min_momentum=0.5)
    alone = screen(_frame(history), ["AAA"], DAY, rules)
    with_future = screen(_frame(history, later), ["AAA"], DAY, rules)
    assert alone.equals(with_future) and _chosen(with_future) == []
    assert with_future["last_close"][0] == 10.0


def test_written_screen_reads_back_the_chosen_and_a_missing_day_is_an_error(tmp_path: Path) -> None:
    out = screen(_frame(_bars("AAA", [10.0]), _bars("BBB", [1.0])), ["AAA", "BBB"], DAY, ScreenerRules(min_price=5.0))
    path = write_screen(tmp_path, DAY, out)
    assert path == screener_path(tmp_path, DAY) and not list(path.parent.glob(".*.tmp"))
    assert chosen_symbols(tmp_path, DAY) == ["AAA"]
    with pytest.raises(LakeError, match="no output for 2024-03-18"):
        chosen_symbols(tmp_path, date(2024, 3, 18))


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        ScreenerRules(lookback=0)
    with pytest.raises(ValueError):
        ScreenerRules(min_price=10.0, max_price=5.0)
