"""Monte Carlo benchmark: trade reshuffle, iid and block bootstrap at 10,000 paths x 500 steps.

Prints one markdown table of the median of 5 timed runs after one warm-up (which also loads or
compiles the Numba kernels). Target: each under 0.2 s. Run: `.venv/bin/python benchmarks/bench_montecarlo.py`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from backtests.montecarlo import MonteCarloResult, bootstrap_returns, trade_reshuffle

N_PATHS = 10_000
N_STEPS = 500
RUNS = 5
TARGET_S = 0.2
BLOCK = 20


def median_seconds(fn: Callable[[], MonteCarloResult]) -> float:
    """Median wall time of RUNS calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    returns = np.random.default_rng(42).normal(0.001, 0.02, N_STEPS)
    cases: list[tuple[str, Callable[[], MonteCarloResult]]] = [
        ("trade_reshuffle", lambda: trade_reshuffle(returns, N_PATHS)),
        ("iid_bootstrap", lambda: bootstrap_returns(returns, N_PATHS)),
        (f"block_bootstrap (block={BLOCK})", lambda: bootstrap_returns(returns, N_PATHS, block=BLOCK)),
    ]
    print("| method | paths | steps | seconds | target |")
    print("|---|---:|---:|---:|---|")
    for name, fn in cases:
        seconds = median_seconds(fn)
        status = "ok" if seconds < TARGET_S else "MISSED"
        print(f"| {name} | {N_PATHS:,} | {N_STEPS} | {seconds:.3f} | < {TARGET_S} s ({status}) |")


if __name__ == "__main__":
    main()
