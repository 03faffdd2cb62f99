"""From signals to the side to hold: one rule for the backtest and the live path.

Plain Python on purpose: the live path calls it per bar, and the backtest compiles this very
function with numba (`backtests/kernels.py`), so both follow the same rule by construction.
"""

from __future__ import annotations


def next_direction(current: int, entry_long: bool, exit_long: bool, entry_short: bool, exit_short: bool) -> int:
    """The side to hold after a bar's signals: 1 long, -1 short, 0 flat.

    An entry with an exit of the same side on the same bar is ignored; entries on both sides at once
    are ambiguous and change nothing; an entry against the held side reverses it.
    """
    want_long = entry_long and not exit_long
    want_short = entry_short and not exit_short
    if want_long and want_short:
        return current
    if want_long:
        return 1
    if want_short:
        return -1
    if (current == 1 and exit_long) or (current == -1 and exit_short):
        return 0
    return current
