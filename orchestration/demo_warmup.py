"""The demo's numba kernels, compiled in a side process while the ingest runs.

On a fresh clone numba has no cache: the backtest, the sweep and the paper session's backtests
compile their kernels on first use (about 25 s of one core). The ingest never uses them, so when a
core is idle (`spare_core`) the demo starts this process first (`start`), on that core: it runs the same calls on a small
offline history (the synthetic source, in the lake's bar schema, so the kernels see the same types)
and numba's on-disk cache (`cache=True` on every kernel, NUMBA_CACHE_DIR or `__pycache__`) keeps the
result. The research steps wait for it (`WarmUp.wait`) and load the kernels instead of compiling
them again. Nothing here writes the lake, the ledger or the instance; a warm-up that fails only
costs the time it saved (the steps compile as they would have).

The parent sends what the steps will run as JSON on stdin (`spec`): strategies, parameters,
backtest configs and the paper session's sizing limits, taken from the assets' own configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# A fixed offline history: no wall clock, and long enough for the slowest swept average (200 bars).
HISTORY = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, tzinfo=UTC))


def spec(research: dict[str, Any], paper: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """What the demo's research and trading steps will compute, from their run configs (the dicts
    `orchestration.demo.demo_steps` gives the assets) and the paper session's sizing limits."""
    from assets.research import ResearchConfig, SweepConfig, _fixed, _grid
    from assets.trading import PaperSessionConfig
    from strategies.registry import load_strategy
    from trading.brokers.simulated import SimConfig
    from trading.session import backtest_config

    backtest = ResearchConfig(**research)
    strategy = load_strategy(backtest.strategy)
    swept = SweepConfig(**research)
    session = PaperSessionConfig(**paper)
    sim = SimConfig(
        seed=session.seed, slippage_bps=session.slippage_bps, commission_per_share=session.commission_per_share,
        partial_fill_prob=session.partial_fill_prob, reject_prob=session.reject_prob,
    )
    return {
        "symbols": (backtest.symbols or [])[:3],
        "timeframe": backtest.timeframe,
        "backtest": {"strategy": backtest.strategy, "params": _fixed(strategy, backtest), "config": backtest.backtest_config().model_dump()},
        "sweep": {
            "strategy": swept.strategy,
            "grid": [p.model_dump() for p in _grid(load_strategy(swept.strategy), swept)],
            "config": swept.backtest_config().model_dump(),
        },
        "paper": {
            "strategy": session.strategy,
            "params": session.params,
            "config": backtest_config(sim, session.initial_cash, session.timeframe).model_dump(),
            "limits": limits,
        },
    }


def warm(job: dict[str, Any]) -> None:
    """Runs the kernels of `job` (a `spec`) once on the offline history."""
    import polars as pl

    from backtests.engine import BacktestConfig, SizingLimits, run_backtest
    from backtests.sweep import sweep
    from lake.schema import conform_bars
    from lake.sources.synthetic import SyntheticSource
    from strategies.registry import load_strategy

    bars = conform_bars(SyntheticSource().fetch(job["symbols"], job["timeframe"], *HISTORY)).sort("symbol", "ts")
    research = job["backtest"]
    strategy = load_strategy(research["strategy"])
    run_backtest(bars, strategy, strategy.params(**research["params"]), BacktestConfig(**research["config"]))
    swept = job["sweep"]
    strategy = load_strategy(swept["strategy"])
    one = bars.filter(pl.col("symbol") == bars["symbol"].min())
    sweep(one, strategy, [strategy.params(**p) for p in swept["grid"]], BacktestConfig(**swept["config"]))
    paper = job["paper"]
    strategy = load_strategy(paper["strategy"])
    params, costs = strategy.params(**paper["params"]), BacktestConfig(**paper["config"])
    run_backtest(bars, strategy, params, costs, limits=SizingLimits(**paper["limits"]))
    run_backtest(bars, strategy, params, costs)


def spare_core(load: float | None = None, cores: int | None = None) -> bool:
    """Whether a core is idle for the side process: the 1-minute load average (default: the
    system's, read now) below the cores less one. Without one it would only compete with the ingest."""
    try:
        load = os.getloadavg()[0] if load is None else load
    except OSError:  # no load average on this platform
        return False
    cores = (os.cpu_count() or 1) if cores is None else cores
    return cores >= 2 and load < cores - 1


@dataclass
class WarmUp:
    """The side process; `wait` blocks until it is done (at most `timeout` seconds)."""

    process: subprocess.Popen[bytes] | None

    def wait(self, timeout: float = 900.0) -> bool:
        """True when the kernels are cached (the process finished cleanly). Generous: at a load of 8 on
        2 cores the warm-up took 128 s of wall, and waiting for it beats compiling the same again."""
        if self.process is None:
            return False
        try:
            return self.process.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            self.stop()  # the steps compile what is missing themselves
            return False

    def stop(self) -> None:
        """Ends the process if it still runs (the demo failed or was interrupted)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start(job: dict[str, Any], env: Mapping[str, str] | None = None) -> WarmUp:
    """Starts the side process on `job` (environment: `env`, default this process's); never raises
    (the demo runs without it)."""
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestration.demo_warmup"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None if env is None else dict(env),
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(job).encode())
        process.stdin.close()
    except OSError:
        return WarmUp(None)
    return WarmUp(process)


if __name__ == "__main__":
    warm(json.loads(sys.stdin.read()))
