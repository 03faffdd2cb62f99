"""Compiled kernels. `*_nb` functions take and return NumPy arrays only."""

from __future__ import annotations

import numpy as np
from numba import njit

from strategies.brackets import bracket_step, half_of
from strategies.entries import after_closing, entry_shares, free_cash
from strategies.positions import next_direction

next_direction_nb = njit(cache=True)(next_direction)
half_of_nb = njit(cache=True)(half_of)
after_closing_nb = njit(cache=True)(after_closing)
entry_shares_nb = njit(cache=True)(entry_shares)
free_cash_nb = njit(cache=True)(free_cash)


@njit(cache=True, inline="always")
def side_of_nb(position: float) -> int:
    """The side a position holds (1 long, -1 short, 0 flat): what signals act on. It follows the
    fills, so an entry that sized to 0 shares leaves the symbol flat, free to enter again."""
    return 1 if position > 0 else -1 if position < 0 else 0


@njit(cache=True, inline="always")
def next_order_nb(held: int, el: bool, xl: bool, es: bool, xs: bool, size: float) -> tuple[int, float]:
    """(side after bar t's signals, target weight to fill on a later bar; NaN: no order). An entry
    whose size is not warmed up yet is skipped: no entry rather than a guess."""
    nxt = next_direction_nb(held, el, xl, es, xs)
    if nxt == held or (nxt != 0 and not np.isfinite(size)):
        return held, np.nan
    return nxt, nxt * size if nxt != 0 else 0.0


@njit(cache=True, inline="always")
def entry_amount_nb(
    weight: float, position: float, value: float, price: float, fee: float, slip: float, whole: bool, free: float
) -> float:
    """The signed amount an entry to `weight` (side x size) trades at `price` (before slippage), on a
    portfolio worth `value` with `position` valued at `price`: to side x `strategies.entries.entry_shares`
    of the equity left after closing an opposite position (`after_closing`), at most `free`
    (`strategies.entries.free_cash`; inf with one symbol, where it equals the equity left). `fee` is
    a fraction of the slipped price (the engine's per-share fee included)."""
    side = 1 if weight > 0 else -1
    fill = price * (1.0 + side * slip)
    available = after_closing_nb(value, position, side, fill, price, fee, 0.0)
    return side * entry_shares_nb(available, abs(weight), fill, fee, 0.0, whole, free) - position


@njit(cache=True, inline="always")
def half_exit_nb(position: float, side: int, whole: bool) -> float:
    """The signed amount a target 1 trades: half of `position` off (strategies.brackets.half_of),
    only when it is on the bracket's `side`; 0 otherwise."""
    if position * side <= 0:
        return 0.0
    return -np.sign(position) * half_of_nb(abs(position), not whole)


bracket_step_nb = njit(cache=True)(bracket_step)

