"""The bar-by-bar classes at their edges (strategies/live.py): how many bars the window keeps, and the
bars it refuses (issue 18: each of these was a surviving mutant)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from strategies.base import Strategy, StrategyError, StrategyParams, no_levels, no_shorts
from strategies.builtin import MOMENTUM, SMA_CROSS
from strategies.live import SignalWindow, UniverseWindow

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


class _Back(StrategyParams):
    back: int = 2


def _up_on_back(bars: pl.DataFrame, p: _Back) -> pl.DataFrame:
    """Long where the close is above the close `back` bars before: needs exactly `back` earlier bars."""
    up = (pl.col("close") > pl.col("close").shift(p.back)).over("symbol")
    return bars.with_columns(up.alias("entry_long"), pl.lit(False).alias("exit_long"), *no_shorts(), pl.lit(1.0).alias("size"), *no_levels())


UP_ON_BACK = Strategy(name="up_on_back", params_model=_Back, compute=_up_on_back, lookback=lambda p: p.back)
UP_ON_BACK_UNIVERSE = Strategy(name="up_on_back_x", params_model=_Back, compute=_up_on_back, lookback=lambda p: p.back, cross_sectional=True)


def _bar(k: int, close: float, symbol: str = "AAA") -> dict[str, Any]:
    return {"symbol": symbol, "ts": T0 + timedelta(hours=k), "open": close, "high": close, "low": close, "close": close}


def test_the_window_keeps_the_bar_and_lookback_bars_before_it() -> None:
    # closes 5, 1, 2, 3, 4: bar k is above bar k-2 from k = 3 on (2 > 5 is not); a window one bar short
    # would not see bar k-2 at all.
    window = SignalWindow(UP_ON_BACK, _Back())
    assert window.size == 3
    got = [window.push(_bar(k, c))["entry_long"] for k, c in enumerate([5.0, 1.0, 2.0, 3.0, 4.0])]
    assert got == [False, False, False, True, True]


def test_the_universe_window_keeps_lookback_plus_one_steps() -> None:
    universe = UniverseWindow(UP_ON_BACK_UNIVERSE, _Back())
    assert universe.size == 3
    got = [universe.push([_bar(k, c, "AAA"), _bar(k, 10.0 - c, "BBB")]) for k, c in enumerate([5.0, 1.0, 2.0, 3.0, 4.0])]
    assert [[row["symbol"] for row in step] for step in got] == [["AAA", "BBB"]] * 5
    assert [[row["entry_long"] for row in step] for step in got] == [[False, False], [False, False], [False, True], [True, False], [True, False]]


def test_a_per_symbol_window_refuses_a_cross_sectional_strategy_and_takes_a_per_symbol_one() -> None:
    with pytest.raises(StrategyError, match="cross_sectional_momentum: cross-sectional strategies need the whole universe per bar"):
        SignalWindow(MOMENTUM, MOMENTUM.params())
    assert SignalWindow(SMA_CROSS, SMA_CROSS.params()).size == SMA_CROSS.lookback(SMA_CROSS.params()) + 1


def test_a_bar_not_after_the_last_one_of_its_symbol_is_refused() -> None:
    window = SignalWindow(UP_ON_BACK, _Back())
    for k in (0, 2, 4):
        window.push(_bar(k, 1.0))
    window.push(_bar(1, 1.0, "BBB"))  # another symbol's clock is its own
    for k in (4, 3):  # the same time, or before the newest (though after the oldest kept)
        with pytest.raises(StrategyError, match=re.escape(f"AAA: bar at {T0 + timedelta(hours=k)} is not after {T0 + timedelta(hours=4)}")):
            window.push(_bar(k, 1.0))


def test_a_universe_step_takes_one_time_after_the_last() -> None:
    universe = UniverseWindow(UP_ON_BACK_UNIVERSE, _Back())
    with pytest.raises(StrategyError, match=r"up_on_back_x: one step takes bars of one time, got \["):
        universe.push([_bar(0, 1.0, "AAA"), _bar(1, 1.0, "BBB")])
    for k in (0, 2, 4):
        universe.push([_bar(k, 1.0, "AAA"), _bar(k, 1.0, "BBB")])
    for k in (4, 3):
        with pytest.raises(StrategyError, match=re.escape(f"up_on_back_x: bars at {T0 + timedelta(hours=k)} are not after {T0 + timedelta(hours=4)}")):
            universe.push([_bar(k, 1.0, "AAA"), _bar(k, 1.0, "BBB")])


def test_a_universe_of_one_symbol_is_refused_the_same_time_twice() -> None:
    universe = UniverseWindow(UP_ON_BACK_UNIVERSE, _Back())
    universe.push([_bar(0, 1.0)])
    with pytest.raises(StrategyError, match=re.escape(f"up_on_back_x: bars at {T0} are not after {T0}")):
        universe.push([_bar(0, 1.0)])
