"""The bar-by-bar path: the same signal function on a trailing window, acting on the last row.

`SignalWindow` keeps the last `lookback + 1` bars per symbol (a ring buffer), so each new bar costs
one call on a small frame, and the answer is exactly the backtest's signal at that bar.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import polars as pl

from strategies.base import Strategy, StrategyError


class SignalWindow:
    def __init__(self, strategy: Strategy[Any], params: Any) -> None:
        if strategy.cross_sectional:
            raise StrategyError(f"{strategy.name}: cross-sectional strategies need the whole universe per bar")
        self.strategy = strategy
        self.params = params
        self.size = strategy.lookback(params) + 1
        self._rows: dict[str, deque[dict[str, Any]]] = {}

    def push(self, bar: dict[str, Any]) -> dict[str, Any]:
        """Adds one bar of one symbol and returns that bar's signal row."""
        rows = self._rows.setdefault(bar["symbol"], deque(maxlen=self.size))
        if rows and bar["ts"] <= rows[-1]["ts"]:
            raise StrategyError(f"{bar['symbol']}: bar at {bar['ts']} is not after {rows[-1]['ts']}")
        rows.append(bar)
        window = pl.DataFrame(list(rows))
        return self.strategy.signals(window, self.params).row(-1, named=True)


class UniverseWindow:
    """The bar-by-bar path of a cross-sectional strategy: one bar of every symbol per step.

    Keeps the last `lookback + 1` bar times of the whole universe, so ranks across symbols at the
    newest bar are exactly the backtest's.
    """

    def __init__(self, strategy: Strategy[Any], params: Any) -> None:
        self.strategy = strategy
        self.params = params
        self.size = strategy.lookback(params) + 1
        self._steps: deque[list[dict[str, Any]]] = deque(maxlen=self.size)

    def push(self, bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adds the bars of one time (all symbols) and returns their signal rows, by symbol."""
        stamps = {b["ts"] for b in bars}
        if len(stamps) != 1:
            raise StrategyError(f"{self.strategy.name}: one step takes bars of one time, got {sorted(stamps)}")
        if self._steps and bars[0]["ts"] <= self._steps[-1][0]["ts"]:
            raise StrategyError(f"{self.strategy.name}: bars at {bars[0]['ts']} are not after {self._steps[-1][0]['ts']}")
        self._steps.append(bars)
        window = pl.DataFrame([b for step in self._steps for b in step])
        latest = self.strategy.signals(window, self.params).filter(pl.col("ts") == bars[0]["ts"])
        return latest.sort("symbol").to_dicts()
