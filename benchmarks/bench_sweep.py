"""Sweep benchmark, one row set per built-in strategy: our `sweep()` on ~1,000 combinations of 1 M
one-minute bars (the offline generator, one symbol), against raw vectorbt; for the cross-sectional
one (`cross_sectional_momentum`, a universe with shared cash) a grid on a universe of one-minute
bars, against the engine once per combination (the route it had before it declared its shape) and
raw vectorbt with cash sharing.

Per strategy, on the same bars:
- ours: `backtests.sweep.sweep` over the whole grid, whatever route the strategy's declaration gives
  it (fused kernel, or the generic compiled path), in a child process for its own peak RSS (imports,
  the bars and the sweep); numba compile excluded (a first call on 500 bars);
- ours before: for rsi_reversion and donchian_breakout, the bar-by-bar fused kernels they had before
  they went from event to event (session 5), on the same grid, final equity compared;
- ours, generic path: the same strategy with its `fast_path` removed, on a few combinations (the
  route the strategy had before it declared a shape; skipped for strategies without one);
- raw vectorbt: `Portfolio.from_signals` on the strategy's own signals for a sample of the grid
  (long-only entries/exits shifted one bar, filled at the open, all-in whole shares, signals built
  outside the timing, so vectorbt's rate is its simulation alone and the ratio is conservative).
  Its final equity is compared with ours where the rules are the same (no bracket levels).
Targets (issue 14): >= 100x vectorbt's bar-evaluations per second, < 1 GB peak RSS. A bar-evaluation
is one bar of one symbol for one combination.
Run: `.venv/bin/python benchmarks/bench_sweep.py [--bars 1000000] [--only rsi_reversion]`;
`--only cross_sectional_momentum --universe 8 --universe-bars 50000` for the universe's rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

from backtests.engine import BacktestConfig  # noqa: E402
from backtests.sweep import expand_grid, sweep  # noqa: E402
from lake.sources.synthetic import SyntheticSource  # noqa: E402
from strategies.base import ChannelBreakout, MovingAverageCross, Strategy  # noqa: E402
from strategies.builtin import BUILTINS  # noqa: E402

CONFIG = BacktestConfig(fees_bps=1.0, timeframe="1m")
# ~1,000 combinations each; long-only, all-in (the sizing defaults), so vectorbt runs the same rules.
GRIDS: dict[str, tuple[dict[str, Any], dict[str, list[Any]]]] = {
    "sma_cross": ({}, {"fast": list(range(2, 52)), "slow": list(range(10, 210, 10))}),
    "rsi_reversion": (
        {},
        {"period": list(range(5, 55, 5)), "lower": [float(v) for v in range(20, 40, 2)], "exit_level": [float(v) for v in range(45, 65, 2)]},
    ),
    "donchian_breakout": ({}, {"entry_window": list(range(10, 110, 10)), "exit_window": list(range(5, 55, 5)), "stop_atr": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]}),
    # On a universe: 6 x 4 x 5 x 3 = 360 combinations; each entry's weight capped, so entries compete for cash.
    "cross_sectional_momentum": (
        {"max_weight": 0.4},
        {"lookback": list(range(20, 140, 20)), "skip": [0, 1, 2, 5], "top_k": [1, 2, 3, 4, 5], "vol_window": [10, 20, 40]},
    ),
}
RANKED = "cross_sectional_momentum"


def peak_gb() -> float:
    """This process's own peak RSS: VmHWM (ru_maxrss survives exec, so a child would report the
    parent's peak when the parent was bigger)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def minute_bars(n: int) -> pl.DataFrame:
    years = int(np.ceil(n / (252 * 390))) + 1
    bars = SyntheticSource(seed=3).fetch(["BENCH"], "1m", datetime(2025 - years, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    return bars.select("symbol", "ts", "open", "high", "low", "close", "volume").tail(n)


def universe_bars(symbols: int, n: int) -> pl.DataFrame:
    """`n` one-minute bars of each of `symbols` symbols (the offline generator), on shared timestamps."""
    names = [f"S{i}" for i in range(symbols)]
    days = int(np.ceil(n / 390 * 7 / 5)) + 10
    bars = SyntheticSource(seed=3).fetch(names, "1m", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=days))
    return bars.select("symbol", "ts", "open", "high", "low", "close", "volume").sort("symbol", "ts").group_by("symbol", maintain_order=True).head(n)


def grid_of(name: str) -> list[Any]:
    fixed, swept = GRIDS[name]
    return expand_grid(BUILTINS[name], fixed, swept)


def sweep_child(path: str, name: str, generic: int) -> None:
    """In a child process: the sweep of `name` over its grid (or, with `generic` > 0, that many
    combinations of it through the generic path), printed as JSON with the process's peak RSS."""
    bars = pl.read_parquet(path)
    strategy: Strategy[Any] = BUILTINS[name]
    grid = grid_of(name)
    if generic < 0:
        bar_by_bar()
    elif generic:
        strategy = replace(strategy, fast_path=None)
        grid = [grid[i] for i in np.linspace(0, len(grid) - 1, generic).astype(int)]
    start = time.perf_counter()
    warm = bars.group_by("symbol", maintain_order=True).head(500)  # the first 500 bars of each symbol
    sweep(warm, strategy, grid[:4], CONFIG)  # numba compile (or cache load), excluded
    compile_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    table = sweep(bars, strategy, grid, CONFIG)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"combinations": len(grid), "bars": bars.height, "seconds": seconds, "cpu": cpu, "compile": compile_s,
                      "peak_gb": peak_gb(), "final": table["final_equity"].to_list()}))  # fmt: skip


def bar_by_bar() -> None:
    """The fused routes as they were before they went from event to event (session 5): the
    threshold and channel kernels stepping every bar, on the polars indicator rows."""
    from backtests import sweep as route
    from backtests.sweep_threshold_nb import threshold_sweep_nb

    def threshold(prices: Any, values: Any, value_row: Any, levels: Any, sizes: Any, size_row: Any, short: Any, costs: Any) -> Any:
        return route._kernel(threshold_sweep_nb)(*prices, values, value_row, *levels, sizes, size_row, short, *costs)

    # rsi_sma None: no indicator is it, so the RSI rows come from the strategy's polars expression;
    # prices taken for not finite: the channel rows from polars, `channel_sweep_nb` bar by bar.
    vars(route).update(_threshold_fast=threshold, rsi_sma=None, _finite=lambda columns: False)


def run_child(path: str, name: str, generic: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", path, "--only", name, "--generic", str(generic)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def vectorbt_sample(bars: pl.DataFrame, strategy: Strategy[Any], sample: list[Any]) -> tuple[np.ndarray, float, float]:
    """Raw vectorbt on the strategy's own long signals for each sampled combination: final equity,
    and the wall and CPU seconds of its simulation alone."""
    import pandas as pd
    import vectorbt as vbt

    frames = [strategy.signals(bars, p) for p in sample]
    entries = pd.DataFrame(np.column_stack([f["entry_long"].to_numpy() for f in frames])).shift(1, fill_value=False)
    exits = pd.DataFrame(np.column_stack([f["exit_long"].to_numpy() for f in frames])).shift(1, fill_value=False)
    close, open_ = pd.Series(bars["close"].to_numpy()), pd.Series(bars["open"].to_numpy())

    def simulate(e: pd.DataFrame, x: pd.DataFrame, c: pd.Series, o: pd.Series) -> np.ndarray:
        pf = vbt.Portfolio.from_signals(c, e, x, price=o, fees=CONFIG.fees_bps / 1e4, size_granularity=1.0, init_cash=CONFIG.init_cash, freq="1min")
        return np.asarray(pf.final_value())

    simulate(entries.head(2_000), exits.head(2_000), close.head(2_000), open_.head(2_000))  # compile outside the timing
    start, cpu = time.perf_counter(), time.process_time()
    final = simulate(entries, exits, close, open_)
    return final, time.perf_counter() - start, time.process_time() - cpu


def strategy_rows(path: str, bars: pl.DataFrame, name: str, vbt_combos: int, generic: int) -> list[tuple[str, float, str, str]]:
    strategy = BUILTINS[name]
    grid = grid_of(name)
    n = bars.height
    fused = strategy.fast_path is not None
    ours = run_child(path, name, 0 if fused else generic)  # the generic path on the whole grid takes many minutes
    ours_rate = n * ours["combinations"] / ours["seconds"]
    picks = np.linspace(0, len(grid) - 1, vbt_combos).astype(int)
    vbt_final, vbt_s, vbt_cpu = vectorbt_sample(bars, strategy, [grid[i] for i in picks])
    vbt_rate = n * vbt_combos / vbt_s
    route = "fused" if fused else "generic path, sampled"
    ratio = ours_rate / vbt_rate
    # On a shared machine wall time is mostly waiting: CPU seconds per bar-evaluation compared too
    # (vectorbt's simulation is single-threaded, ours uses every core: the CPU ratio is the lower one).
    cpu_ratio = (vbt_cpu / (n * vbt_combos)) / (ours["cpu"] / (n * ours["combinations"]))
    verdict = "meets" if min(ratio, cpu_ratio) >= 100 and ours["peak_gb"] < 1 else "MISSES"
    rows = [
        (
            f"{name}: ours ({route}), {ours['combinations']} combinations x {n:,} bars",
            ours["seconds"],
            f"{ours_rate / 1e6:.0f} M bar-evals/s",
            f"{ratio:.0f}x vectorbt (wall), {cpu_ratio:.0f}x per CPU-second; peak RSS {ours['peak_gb']:.2f} GB; cpu {ours['cpu']:.1f} s; {verdict} the targets (>= 100x, < 1 GB)",
        )
    ]
    if fused and not isinstance(strategy.fast_path, MovingAverageCross):
        old = run_child(path, name, -1)
        old_rate = n * old["combinations"] / old["seconds"]
        same = "same final equity" if old["final"] == ours["final"] else "FINAL EQUITY DIFFERS"
        rows.append((f"{name}: ours before (session 5's bar-by-bar fused kernel), {old['combinations']} combinations", old["seconds"], f"{old_rate / 1e6:.0f} M bar-evals/s",
                     f"{old_rate / vbt_rate:.0f}x vectorbt (wall), {(vbt_cpu / (n * vbt_combos)) / (old['cpu'] / (n * old['combinations'])):.0f}x per CPU-second; peak RSS {old['peak_gb']:.2f} GB; cpu {old['cpu']:.1f} s; {same} as now"))  # fmt: skip
    if generic and fused:
        before = run_child(path, name, generic)
        before_rate = n * before["combinations"] / before["seconds"]
        rows.append((f"{name}: ours, generic path, {before['combinations']} sampled combinations", before["seconds"], f"{before_rate / 1e6:.1f} M bar-evals/s", f"{before_rate / vbt_rate:.1f}x vectorbt; peak RSS {before['peak_gb']:.2f} GB"))
    agreement = "no bracket exits in vectorbt: equity not compared"
    if fused and not isinstance(strategy.fast_path, ChannelBreakout):  # no bracket levels: the same rules
        agreement = f"final equity max rel. diff {np.max(np.abs(np.asarray(ours['final'])[picks] / vbt_final - 1)):.1e}"
    rows.append((f"{name}: raw vectorbt from_signals, {vbt_combos} sampled combinations", vbt_s, f"{vbt_rate / 1e6:.1f} M bar-evals/s", f"cpu {vbt_cpu:.1f} s; {agreement}"))
    rows.append((f"{name}: numba compile or cache load (excluded above)", ours["compile"], "", ""))
    return rows


def vectorbt_universe_sample(bars: pl.DataFrame, strategy: Strategy[Any], sample: list[Any]) -> tuple[float, float]:
    """Raw vectorbt on the strategy's own signals for each sampled combination, the universe in one
    cash-sharing group (signals shifted one bar, filled at the open, `size` as a percent of the cash,
    whole shares, exits first by `call_seq="auto"`: close to, not exactly, the engine's rules):
    wall and CPU seconds of its simulation alone."""
    import pandas as pd
    import vectorbt as vbt

    from backtests.market import to_market

    def simulate(market: Any, rows: int) -> None:
        def shifted(name: str, fill: Any) -> pd.DataFrame:
            return pd.DataFrame(market.signals[name][:rows]).shift(1, fill_value=fill)

        vbt.Portfolio.from_signals(
            pd.DataFrame(market.close[:rows]), shifted("entry_long", False), shifted("exit_long", False), size=shifted("size", np.nan),
            size_type="percent", price=pd.DataFrame(market.open[:rows]), fees=CONFIG.fees_bps / 1e4, size_granularity=1.0,
            init_cash=CONFIG.init_cash, cash_sharing=True, group_by=True, call_seq="auto", freq="1min",
        ).final_value()  # fmt: skip

    markets = [to_market(strategy.signals(bars, p)) for p in sample]
    simulate(markets[0], 2_000)  # compile outside the timing
    start, cpu = time.perf_counter(), time.process_time()
    for market in markets:
        simulate(market, market.close.shape[0])
    return time.perf_counter() - start, time.process_time() - cpu


def ranked_rows(path: str, bars: pl.DataFrame, vbt_combos: int, engine_combos: int) -> list[tuple[str, float, str, str]]:
    """The cross-sectional strategy's rows: our compiled route on the whole grid, the engine once per
    combination on a sample of it (the same combinations' final equity compared), raw vectorbt."""
    strategy, grid = BUILTINS[RANKED], grid_of(RANKED)
    n, symbols = bars.height // bars["symbol"].n_unique(), bars["symbol"].n_unique()
    ours = run_child(path, RANKED, 0)
    engine = run_child(path, RANKED, engine_combos)
    picks = np.linspace(0, len(grid) - 1, engine_combos).astype(int)
    ours_per, engine_per = ours["seconds"] / ours["combinations"], engine["seconds"] / engine["combinations"]
    cpu_ratio = (engine["cpu"] / engine["combinations"]) / (ours["cpu"] / ours["combinations"])
    diff = np.max(np.abs(np.asarray(ours["final"])[picks] / np.asarray(engine["final"]) - 1))
    vbt_s, vbt_cpu = vectorbt_universe_sample(bars, strategy, [grid[i] for i in np.linspace(0, len(grid) - 1, vbt_combos).astype(int)])
    evals = n * symbols
    return [
        (
            f"{RANKED}: ours (compiled rank kernel), {ours['combinations']} combinations x {symbols} symbols x {n:,} bars",
            ours["seconds"],
            f"{evals * ours['combinations'] / ours['seconds'] / 1e6:.0f} M bar-evals/s",
            f"{engine_per / ours_per:.0f}x the engine per combination (wall), {cpu_ratio:.0f}x per CPU-second; "
            f"{(vbt_s / vbt_combos) / ours_per:.0f}x vectorbt (wall); peak RSS {ours['peak_gb']:.2f} GB; cpu {ours['cpu']:.1f} s",
        ),
        (
            f"{RANKED}: the engine once per combination, {engine['combinations']} sampled combinations",
            engine["seconds"],
            f"{evals * engine['combinations'] / engine['seconds'] / 1e6:.1f} M bar-evals/s",
            f"cpu {engine['cpu']:.1f} s; final equity max rel. diff from ours {diff:.1e}; peak RSS {engine['peak_gb']:.2f} GB",
        ),
        (
            f"{RANKED}: raw vectorbt from_signals, cash sharing, {vbt_combos} sampled combinations",
            vbt_s,
            f"{evals * vbt_combos / vbt_s / 1e6:.1f} M bar-evals/s",
            f"cpu {vbt_cpu:.1f} s; rules close to ours, not the same: equity not compared",
        ),
        (f"{RANKED}: numba compile or cache load (excluded above)", ours["compile"], "", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--vbt-combos", type=int, default=20, help="combinations run through raw vectorbt")
    parser.add_argument("--generic", type=int, default=16, help="combinations through the generic path for a fused strategy (0: skip)")
    parser.add_argument("--only", default="", help="one strategy")
    parser.add_argument("--universe", type=int, default=8, help=f"symbols in {RANKED}'s universe")
    parser.add_argument("--universe-bars", type=int, default=50_000, help=f"one-minute bars per symbol for {RANKED}")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sweep_child(args.child, args.only, args.generic)
        return
    names = [args.only] if args.only else list(GRIDS)
    rows: list[tuple[str, float, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bars.parquet")
        if names != [RANKED]:
            bars = minute_bars(args.bars)
            bars.write_parquet(path)
            for name in names:
                if name != RANKED:
                    rows += strategy_rows(path, bars, name, args.vbt_combos, args.generic)
            print(f"\n{bars.height:,} one-minute bars, one symbol", end="; ")
        if RANKED in names:
            universe = universe_bars(args.universe, args.universe_bars)
            universe.write_parquet(path)
            rows += ranked_rows(path, universe, max(2, args.vbt_combos // 4), max(2, args.generic // 2))
            print(f"\n{RANKED}: {args.universe} symbols x {args.universe_bars:,} one-minute bars", end="; ")
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}\n")
    print("| run | seconds | throughput | comparison |")
    print("|---|---:|---|---|")
    for label, seconds, rate, note in rows:
        print(f"| {label} | {seconds:.2f} | {rate} | {note} |")


if __name__ == "__main__":
    main()
