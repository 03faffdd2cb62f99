"""The bracket rule, bar by bar: one rule for the backtest and the brokers.

A long entry carries three levels from its signal bar: a stop, target 1 and target 2. From the bar
after the entry fills (the entry bar's own range came partly before the fill):
- phase 1 (whole position): the stop is checked first (pessimistic when a bar spans both), then
  target 1, which exits half (whole shares: half rounded down) and moves the stop to the entry price;
- phase 2 (the rest): the breakeven stop first, then target 2, which exits the rest.
At most one bracket exit per bar. A bar that opens beyond a level fills at the open (a gap).
Without target 1, target 2 exits everything in phase 1. NaN levels are absent. A short entry's
bracket is the mirror image: stop above, targets below, "opens beyond a level" means above the stop
or below a target.

Plain Python on purpose: the backtest compiles this very function with numba (`backtests/kernels.py`).
"""

from __future__ import annotations

import math

FLAT = 0
FULL = 1
HALF_LEFT = 2

NO_EXIT = 0
EXIT_HALF = 1
EXIT_ALL = 2


def bracket_step(
    phase: int,
    entry: float,
    stop: float,
    target1: float,
    target2: float,
    open_: float,
    high: float,
    low: float,
    side: int = 1,
) -> tuple[int, int, float]:
    """(new phase, exit action, exit price) for one bar of a bracket in `phase`.

    `side` -1 is a short's bracket (stop above, targets below): the same rule on mirrored prices
    (every price negated, so high and low swap), whose exit price is negated back.
    """
    if side < 0:
        entry, stop, target1, target2 = -entry, -stop, -target1, -target2
        open_, high, low = -open_, -low, -high
    active_stop = stop if phase == FULL else entry
    if not math.isnan(active_stop) and low <= active_stop:
        return FLAT, EXIT_ALL, side * min(open_, active_stop)
    if phase == FULL and not math.isnan(target1):
        if high >= target1:
            return HALF_LEFT, EXIT_HALF, side * max(open_, target1)
        return phase, NO_EXIT, math.nan
    if not math.isnan(target2) and high >= target2:
        return FLAT, EXIT_ALL, side * max(open_, target2)
    return phase, NO_EXIT, math.nan


def half_of(quantity: float, fractional: bool) -> float:
    """The part target 1 exits: half, rounded down to whole shares unless fractional."""
    half = quantity * 0.5
    return half if fractional else float(math.floor(half))
