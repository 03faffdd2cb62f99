"""The event-to-event kernels' helpers (`backtests/sweep_stretch_nb.py`) against the plain answer they
stand for: range extremes against numpy's, the next set bit and the first bracket touch against a
scan, a stretch's peak and drawdown against `sweep_nb._mark_nb` bar by bar."""

from __future__ import annotations

import numpy as np
import pytest

from backtests.sweep_nb import _mark_nb
from backtests.sweep_stretch_nb import (
    first_touch_nb,
    mark_stretch_nb,
    next_bit_nb,
    range_nb,
    range_tables_nb,
    set_bit_nb,
)

RNG = np.random.default_rng(7)
N = 3_000  # 187 blocks of 16 bars: sparse levels up to 7, a partial last block
X = 100.0 + np.cumsum(RNG.normal(0.0, 1.0, N))
SPANS = [(a, b) for a, b in RNG.integers(0, N, (400, 2)) if a <= b] + [(0, 0), (0, N - 1), (15, 16), (16, 31), (17, 17), (5, 7), (18, 30), (N - 5, N - 1), (32, 2_079)]
SPANS += [(a, a + d) for a in range(1, 300, 7) for d in (0, 1, 3)]  # inside one block of 16, mostly


def test_range_extremes_equal_numpy() -> None:
    tables = range_tables_nb(X)
    for a, b in SPANS:
        assert range_nb(X, *tables, a, b) == (X[a : b + 1].min(), X[a : b + 1].max()), (a, b)


def test_next_bit_is_the_first_set_bit_before_stop() -> None:
    words = (N + 63) // 64
    a, b = np.zeros(words, dtype=np.uint64), np.zeros(words, dtype=np.uint64)
    set_a, set_b = RNG.choice(N, 40, replace=False), RNG.choice(N, 5, replace=False)
    for t in set_a:
        set_bit_nb(a, int(t))
    for t in set_b:
        set_bit_nb(b, int(t))
    bits = np.zeros(N, dtype=bool)
    bits[set_a] = bits[set_b] = True
    for t, stop in [*SPANS, (0, N), (N - 1, N), (63, 64), (64, 200)]:
        hits = np.flatnonzero(bits[t:stop])
        assert next_bit_nb(a, b, t, stop) == (t + hits[0] if hits.size else stop), (t, stop)


@pytest.mark.parametrize("side", ["stop", "target", "both", "nan", "every", "before"])
def test_first_touch_is_the_first_bar_reaching_a_level(side: str) -> None:
    low, high = X - RNG.uniform(0, 2, N), X + RNG.uniform(0, 2, N)
    low_min, high_max = range_tables_nb(low)[4], range_tables_nb(high)[5]
    for a, b in SPANS:
        before = low[a - a % 16 : a].min() if a % 16 else -np.inf  # touched earlier in a's block only
        s = {"stop": X[a] - 6.0, "target": np.nan, "both": X[a] - 8.0, "nan": np.nan, "every": np.inf, "before": before}[side]
        h = {"stop": np.nan, "target": X[a] + 6.0, "both": X[a] + 8.0, "nan": np.nan, "every": np.nan, "before": np.nan}[side]
        hits = np.flatnonzero((low[a : b + 1] <= s) | (high[a : b + 1] >= h))
        assert first_touch_nb(low, high, low_min, high_max, a, b, s, h) == (a + hits[0] if hits.size else b + 1), (a, b)


@pytest.mark.parametrize("pos", [0.0, 3.0, -2.0, 40.0])
def test_a_stretch_marks_as_bar_by_bar(pos: float) -> None:
    """Peak and drawdown after a stretch equal `_mark_nb` bar by bar, from a fresh peak, a peak
    above the stretch and a deep drawdown: the skip, the no-new-peak and the walk all taken."""
    tables = range_tables_nb(X)
    for cash, peak, dd in [(1_000.0, 1_000.0, 0.0), (1_000.0, 5_000.0, 0.1), (500.0, 600.0, 0.5), (-50.0, 900.0, 0.02)]:
        for a, b in SPANS:
            p, d = peak, dd
            for t in range(a, b + 1):
                _, p, d = _mark_nb(cash, pos, X[t], p, d)
            assert mark_stretch_nb(X, *tables, a, b, cash, pos, peak, dd) == (p, d), (a, b, cash, peak, dd)
