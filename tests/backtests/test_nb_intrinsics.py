"""The compiled sweeps' two intrinsics have a plain-Python form, so the kernels also run interpreted
(`NUMBA_DISABLE_JIT=1`: the mutation runner's first pass settles kills there, scripts/mutate.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from numba import njit

from backtests.nb_intrinsics import trailing_zeros_nb, unowned_nb

ROOT = Path(__file__).resolve().parents[2]


@njit(cache=True)
def _trailing_zeros_compiled(words: np.ndarray) -> np.ndarray:
    out = np.empty(words.size, dtype=np.int64)
    for i in range(words.size):
        out[i] = trailing_zeros_nb(words[i])
    return out


def test_trailing_zeros_interpreted_equals_compiled() -> None:
    rng = np.random.default_rng(7)
    words = np.concatenate(
        [np.uint64(1) << np.arange(64, dtype=np.uint64), rng.integers(1, 2**63, 500, dtype=np.uint64) << rng.integers(0, 12, 500).astype(np.uint64)]
    )
    words = words[words != 0]
    interpreted = np.array([trailing_zeros_nb(w) for w in words])
    assert np.array_equal(interpreted, _trailing_zeros_compiled(words))
    assert trailing_zeros_nb(np.uint64(1) << np.uint64(63)) == 63 and trailing_zeros_nb(np.uint64(12)) == 2


def test_unowned_interpreted_is_the_array() -> None:
    x = np.arange(3.0)
    assert unowned_nb(x) is x


def test_the_sweep_kernels_run_interpreted_and_equal_the_engine() -> None:
    cases = " or ".join(
        [
            "test_every_single_symbol_builtin_sweep_equals_engine and sma_cross and fixed_fraction and long_only",
            "test_every_single_symbol_builtin_sweep_equals_engine and donchian and fixed_fraction and long_only",
            "test_cross_sectional_sweep_runs_the_universe_and_equals_engine and long_only",
        ]
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0", "-W", "ignore::RuntimeWarning",
         str(ROOT / "tests" / "backtests" / "test_sweep.py"), "-k", cases],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
