"""Compiled kernels. `*_nb` functions take and return NumPy arrays only."""

from __future__ import annotations

import numpy as np
from numba import njit

from strategies.positions import next_direction

next_direction_nb = njit(cache=True)(next_direction)


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
            nxt = next_direction_nb(held, entry_long[t, j], exit_long[t, j], entry_short[t, j], exit_short[t, j])
            if nxt == held:
                continue
            if nxt != 0 and not np.isfinite(size[t, j]):
                continue  # sizing not warmed up yet: no entry rather than a guess
            out[t + delay, j] = nxt * size[t, j] if nxt != 0 else 0.0
            held = nxt
    return out
