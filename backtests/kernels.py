"""Compiled kernels. `*_nb` functions take and return NumPy arrays only."""

from __future__ import annotations

import numpy as np
from numba import njit

from strategies.brackets import bracket_step, half_of
from strategies.entries import after_closing, entry_shares
from strategies.positions import next_direction

next_direction_nb = njit(cache=True)(next_direction)
half_of_nb = njit(cache=True)(half_of)
after_closing_nb = njit(cache=True)(after_closing)
entry_shares_nb = njit(cache=True)(entry_shares)


@njit(cache=True, inline="always")
def next_order_nb(held: int, el: bool, xl: bool, es: bool, xs: bool, size: float) -> tuple[int, float]:
    """(side after bar t's signals, target weight to fill on a later bar; NaN: no order). An entry
    whose size is not warmed up yet is skipped: no entry rather than a guess."""
    nxt = next_direction_nb(held, el, xl, es, xs)
    if nxt == held or (nxt != 0 and not np.isfinite(size)):
        return held, np.nan
    return nxt, nxt * size if nxt != 0 else 0.0


@njit(cache=True, inline="always")
def entry_amount_nb(weight: float, position: float, value: float, price: float, fee: float, slip: float, whole: bool) -> float:
    """The signed amount an entry to `weight` (side x size) trades at `price` (before slippage), on a
    portfolio worth `value` with `position` valued at `price`: to side x `strategies.entries.entry_shares`
    of the equity left after closing an opposite position (`after_closing`). `fee` is a fraction of
    the slipped price (the engine's per-share fee included)."""
    side = 1 if weight > 0 else -1
    fill = price * (1.0 + side * slip)
    available = after_closing_nb(value, position, side, fill, price, fee, 0.0)
    return side * entry_shares_nb(available, abs(weight), fill, fee, 0.0, whole) - position


@njit(cache=True, inline="always")
def half_exit_nb(position: float, side: int, whole: bool) -> float:
    """The signed amount a target 1 trades: half of `position` off (strategies.brackets.half_of),
    only when it is on the bracket's `side`; 0 otherwise."""
    if position * side <= 0:
        return 0.0
    return -np.sign(position) * half_of_nb(abs(position), not whole)


@njit(cache=True)
def target_weights_nb(
    entry_long: np.ndarray,
    exit_long: np.ndarray,
    entry_short: np.ndarray,
    exit_short: np.ndarray,
    size: np.ndarray,
    delay: int,
) -> np.ndarray:
    """Target weight per (bar, column), NaN where nothing changes. A change decided on bar t is
    placed on bar t + delay (delay >= 1: no fill on the bar that produced the signal)."""
    n, m = entry_long.shape
    out = np.full((n, m), np.nan)
    for j in range(m):
        held = 0
        for t in range(n - delay):
            held, order = next_order_nb(held, entry_long[t, j], exit_long[t, j], entry_short[t, j], exit_short[t, j], size[t, j])
            out[t + delay, j] = order
    return out


bracket_step_nb = njit(cache=True)(bracket_step)

# vectorbt's SizeType code used below, and our own: "half the position actually held" and "an
# entry to this weight (side x size), sized by strategies.entries", resolved during the simulation.
TARGET_PERCENT = 5
HALF_POSITION = -1
ENTRY = -2


@njit(cache=True)
def bracket_orders_nb(
    entry_long: np.ndarray,
    exit_long: np.ndarray,
    entry_short: np.ndarray,
    exit_short: np.ndarray,
    size: np.ndarray,
    stop: np.ndarray,
    target1: np.ndarray,
    target2: np.ndarray,
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orders per (bar, column) as (size, size type, price), NaN size where none.

    Signals act as in `target_weights_nb` (decided on t, filled on t+1): entries as ENTRY of their
    signed weight, exits as target 0. Entries from flat, long or short (not reversals, whose cover
    may not have filled in full), carry their signal bar's levels;
    from the bar after the fill, `bracket_step` may exit half (HALF_POSITION, size = the bracket's
    side: half the position actually held, resolved during the simulation) or all (target 0), at the
    level's price. A bar with a signal fill has no bracket exit (the open comes first and settles it).
    """
    n, m = entry_long.shape
    out_size = np.full((n, m), np.nan)
    out_type = np.full((n, m), TARGET_PERCENT, dtype=np.int64)
    out_price = fill_price.copy()
    for j in range(m):
        held = 0
        phase = 0
        fill_bar = -1
        entry = np.nan
        lv_stop, lv_t1, lv_t2 = np.nan, np.nan, np.nan
        pending = np.nan
        pending_from_flat = False
        pending_levels = (np.nan, np.nan, np.nan)
        for t in range(n):
            if not np.isnan(pending):
                out_size[t, j] = pending
                if pending != 0:
                    out_type[t, j] = ENTRY
                if pending != 0 and held != 0 and pending_from_flat:
                    phase, fill_bar, entry = 1, t, fill_price[t, j]
                    lv_stop, lv_t1, lv_t2 = pending_levels
                else:
                    phase = 0
                pending = np.nan
            elif held != 0 and phase > 0 and t > fill_bar:
                phase, action, price = bracket_step_nb(
                    phase, entry, lv_stop, lv_t1, lv_t2, open_[t, j], high[t, j], low[t, j], held
                )
                if action == 1:
                    out_size[t, j], out_type[t, j], out_price[t, j] = held, HALF_POSITION, price
                elif action == 2:
                    out_size[t, j], out_price[t, j] = 0.0, price
                    held = 0
            if t == n - 1:
                continue
            nxt, order = next_order_nb(held, entry_long[t, j], exit_long[t, j], entry_short[t, j], exit_short[t, j], size[t, j])
            if np.isnan(order):
                continue
            pending, pending_from_flat = order, held == 0
            pending_levels = (stop[t, j], target1[t, j], target2[t, j])
            held = nxt
    return out_size, out_type, out_price
