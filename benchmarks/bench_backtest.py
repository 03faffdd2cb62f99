"""Backtest benchmark: sweep, single backtest, walk-forward, Monte Carlo. One table, one run.

Same data for every row: one symbol's 1-minute bars from the offline generator (about 1 M bars).
- Sweep: the fused numba kernel over ~1,000 (fast, slow) pairs, against vectorbt's
  `Portfolio.from_signals` on a sample of the same pairs (vectorbt on all of them needs 9-19 GB);
  throughput is bar-evaluations per second, and the sampled pairs' final equity must agree.
- One backtest: our engine (vectorbt) against the plain reference loop of the tests, on a slice
  (the loop is slow on purpose: it is written to be read), compared per bar.
- Walk-forward: 10 folds over the same grid, against the time of one full sweep.
- Monte Carlo: 10,000 paths x 500 trades.
Numba compile time is measured apart (first call on a tiny input) and excluded from run times.
Run: `make bench` or `.venv/bin/python benchmarks/bench_backtest.py [--bars 1000000]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

from backtests import montecarlo  # noqa: E402
from backtests.engine import BacktestConfig, run_backtest  # noqa: E402
from backtests.sweep import expand_grid, sweep  # noqa: E402
from backtests.walkforward import walk_forward  # noqa: E402
from lake.sources.synthetic import SyntheticSource  # noqa: E402
from strategies import indicators as ind  # noqa: E402
from strategies.builtin import SMA_CROSS, SmaCrossParams  # noqa: E402
from tests.backtests.reference import reference_backtest  # noqa: E402

FAST = list(range(2, 52))
SLOW = list(range(10, 210, 10))
CONFIG = BacktestConfig(fees_bps=1.0, timeframe="1m")


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def minute_bars(n: int) -> pl.DataFrame:
    years = int(np.ceil(n / (252 * 390))) + 1
    bars = SyntheticSource(seed=3).fetch(["BENCH"], "1m", datetime(2025 - years, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    return bars.tail(n)


def vectorbt_sweep(bars: pl.DataFrame, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Raw vectorbt: MA crossover signals shifted one bar, filled at the open, all-in long-only."""
    import pandas as pd
    import vectorbt as vbt

    close = pd.Series(bars["close"].to_numpy())
    open_ = pd.Series(bars["open"].to_numpy())
    # The strategy's own moving averages (polars): pandas' rolling mean drifts by ~1e-12 over a
    # million bars, which flips a few near-tie crossings and would compare two different signals.
    fast = pd.DataFrame(bars.select(ind.sma(f).alias(str(i)) for i, (f, _) in enumerate(pairs)).to_numpy())
    slow = pd.DataFrame(bars.select(ind.sma(s).alias(str(i)) for i, (_, s) in enumerate(pairs)).to_numpy())
    entries = ((fast > slow) & (fast.shift(1) <= slow.shift(1))).shift(1, fill_value=False)
    exits = ((fast < slow) & (fast.shift(1) >= slow.shift(1))).shift(1, fill_value=False)
    pf = vbt.Portfolio.from_signals(
        close, entries, exits, price=open_, fees=CONFIG.fees_bps / 1e4, size_granularity=1.0, init_cash=CONFIG.init_cash, freq="1min"
    )
    return np.asarray(pf.final_value())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--vbt-pairs", type=int, default=40, help="pairs run through raw vectorbt")
    parser.add_argument("--reference-bars", type=int, default=20_000)
    args = parser.parse_args()

    bars = minute_bars(args.bars)
    n = bars.height
    pairs = [(f, s) for f in FAST for s in SLOW if f < s]
    rows: list[tuple[str, float, str, str]] = []

    _, compile_s = timed(sweep, bars.head(500), SMA_CROSS, expand_grid(SMA_CROSS, {}, {"fast": [2, 3], "slow": [10, 20]}), CONFIG)
    table, ours_s = timed(sweep, bars, SMA_CROSS, expand_grid(SMA_CROSS, {}, {"fast": FAST, "slow": SLOW}), CONFIG)
    ours_rate = n * len(pairs) / ours_s
    peak_after_sweep = peak_gb()

    sample = [pairs[i] for i in np.linspace(0, len(pairs) - 1, args.vbt_pairs).astype(int)]
    vectorbt_sweep(bars.head(2_000), sample[:2])  # compile vectorbt's kernels outside the timing
    vbt_final, vbt_s = timed(vectorbt_sweep, bars, sample)
    vbt_rate = n * len(sample) / vbt_s
    ours_final = table.join(pl.DataFrame(sample, schema=["fast", "slow"], orient="row"), on=["fast", "slow"]).sort(
        pl.col("fast") * 1000 + pl.col("slow")
    )
    order = sorted(range(len(sample)), key=lambda i: sample[i][0] * 1000 + sample[i][1])
    max_diff = float(np.max(np.abs(ours_final["final_equity"].to_numpy() / vbt_final[order] - 1)))
    rows.append((f"sweep {len(pairs)} pairs x {n:,} bars: ours (fused numba)", ours_s, f"{ours_rate / 1e6:.0f} M bar-evals/s", f"{ours_rate / vbt_rate:.1f}x vectorbt"))
    rows.append((f"sweep {len(sample)} sampled pairs: raw vectorbt from_signals", vbt_s, f"{vbt_rate / 1e6:.1f} M bar-evals/s", f"final equity max rel. diff {max_diff:.1e}"))
    rows.append(("numba compile (first call, excluded above)", compile_s, "", ""))

    p = SmaCrossParams(fast=10, slow=50)
    run_backtest(bars.head(1_000), SMA_CROSS, p, CONFIG)
    _, engine_s = timed(run_backtest, bars, SMA_CROSS, p, CONFIG)
    part = bars.head(args.reference_bars)
    _, ref_s = timed(reference_backtest, SMA_CROSS.signals(part, p), init_cash=CONFIG.init_cash, fees_bps=CONFIG.fees_bps)
    engine_rate, ref_rate = n / engine_s, part.height / ref_s
    rows.append((f"one backtest, {n:,} bars: our engine", engine_s, f"{engine_rate / 1e6:.2f} M bars/s", f"{engine_rate / ref_rate:.0f}x the reference loop"))
    rows.append((f"one backtest, {part.height:,} bars: plain reference loop", ref_s, f"{ref_rate / 1e3:.1f} k bars/s", ""))

    grid = [SmaCrossParams(fast=f, slow=s) for f, s in pairs]
    _, wf_s = timed(walk_forward, bars, SMA_CROSS, grid, CONFIG, folds=10)
    rows.append(("walk-forward, 10 folds, same grid", wf_s, "", f"{wf_s / ours_s:.2f}x one full sweep (target <= 1.5x)"))

    trade_returns = np.random.default_rng(0).normal(0.002, 0.02, 500)
    montecarlo.trade_reshuffle(trade_returns, 100)
    _, mc_s = timed(montecarlo.trade_reshuffle, trade_returns, 10_000)
    rows.append(("Monte Carlo trade reshuffle, 10,000 paths x 500 trades", mc_s, "", "target < 0.2 s"))

    print(f"\n{n:,} one-minute bars; peak RSS after our sweep {peak_after_sweep:.2f} GB (target < 3 GB), after vectorbt {peak_gb():.2f} GB\n")
    print("| run | seconds | throughput | comparison |")
    print("|---|---:|---|---|")
    for label, seconds, rate, note in rows:
        print(f"| {label} | {seconds:.2f} | {rate} | {note} |")


if __name__ == "__main__":
    main()
