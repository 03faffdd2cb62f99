"""Walk-forward analysis: optimize in-sample, trade the winner out-of-sample, fold after fold.

Folds: the bars after the first in-sample window are cut into `folds` equal out-of-sample
segments. Rolling mode optimizes on the `is_bars` bars just before each segment; anchored mode on
everything from the start. Out-of-sample runs warm their indicators up on the bars before the
segment (the grid's longest `strategy.lookback`) but trade only inside it; the segments' returns
are chained into one equity curve.

A cross-sectional strategy (cross-sectional momentum) walks forward on its whole universe: bars
count as timestamps (every symbol shares each one), each fold's winner is the in-sample best of the
sweep over the universe (the compiled rank sweep where declared), and its out-of-sample segment is
one `run_backtest` of the universe with shared cash. Either way a fold sees nothing of its segment
before choosing, and decisions inside it take only bars up to their own (fills at t+1).

Walk-forward efficiency = mean annualized out-of-sample return / mean annualized in-sample return
of the chosen parameters (1.0: the edge survives out of sample; <= 0: it does not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from backtests.engine import BacktestConfig, BacktestError, run_backtest
from backtests.metrics import periods_per_year
from backtests.sweep import sweep
from strategies.base import Strategy, StrategyParams

Objective = Literal["total_return", "return_over_drawdown"]


@dataclass(frozen=True)
class WalkForwardResult:
    folds: pl.DataFrame  # one row per fold: windows, chosen parameters, IS and OOS scores
    oos_equity: pl.DataFrame  # ts, equity: the stitched out-of-sample curve
    efficiency: float
    stability: dict[str, float]  # per parameter: share of folds that chose the most common value
    chosen: list[StrategyParams]  # per fold: the winning grid entry, every field as given


def _score(table: pl.DataFrame, objective: Objective) -> pl.Series:
    if objective == "total_return":
        return table["total_return"]
    return table["total_return"] / table["max_drawdown"].clip(lower_bound=1e-6)


def _optimize(bars: pl.DataFrame, strategy: Strategy[Any], grid: Sequence[StrategyParams], config: BacktestConfig, objective: Objective) -> tuple[StrategyParams, float]:
    """The grid's best combination in-sample (first of equals), as given: every field kept."""
    table = sweep(bars, strategy, grid, config)
    best = int(np.argmax(_score(table, objective).fill_nan(-np.inf).to_numpy()))
    return grid[best], float(table["total_return"][best])


def walk_forward(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig | None = None,
    *,
    folds: int = 10,
    is_bars: int | None = None,
    mode: Literal["rolling", "anchored"] = "rolling",
    objective: Objective = "total_return",
    progress: Callable[[int, int], None] | None = None,
) -> WalkForwardResult:
    config = config or BacktestConfig()
    if not grid:
        raise BacktestError("walk_forward: empty parameter grid")
    if not strategy.cross_sectional and bars["symbol"].n_unique() > 1:
        raise BacktestError(f"walk_forward: {strategy.name} runs on one symbol at a time, got {sorted(bars['symbol'].unique().to_list())}")
    ordered = bars.sort("ts", "symbol")
    ts = ordered["ts"].unique(maintain_order=True)  # a universe's bars share each timestamp
    n = ts.len()
    short = ordered.group_by("symbol").len().filter(pl.col("len") < n).sort("symbol")
    if short.height:  # refused before any fold runs, not in the fold that meets the gap
        gaps = ", ".join(f"{s} has {k}" for s, k in short.iter_rows())
        raise BacktestError(f"walk_forward: the universe's symbols must share every bar: {gaps} of {n} timestamps")
    if folds < 1:
        raise BacktestError(f"walk_forward: folds must be >= 1, got {folds}")
    is_len = is_bars or n // (folds + 1)
    oos_len = (n - is_len) // folds
    if is_len < 2 or oos_len < 2:
        raise BacktestError(f"walk_forward: {n} bars are too few for {folds} folds with {is_len} in-sample bars")
    warmup = max(strategy.lookback(p) for p in grid)

    def between(first: int, end: int) -> pl.DataFrame:
        """The bars of timestamps first .. end - 1 (every symbol)."""
        lo = ordered["ts"].search_sorted(ts[first], "left")
        return ordered.slice(lo, ordered["ts"].search_sorted(ts[end - 1], "right") - lo)

    rows, pieces, winners, level = [], [], [], config.init_cash
    for k in range(folds):
        oos_start = is_len + k * oos_len
        oos_end = n if k == folds - 1 else oos_start + oos_len
        is_start = 0 if mode == "anchored" else oos_start - is_len
        chosen, is_return = _optimize(between(is_start, oos_start), strategy, grid, config, objective)
        winners.append(chosen)
        window = between(max(0, oos_start - warmup), oos_end)
        oos = run_backtest(window, strategy, chosen, config, trade_from=ts[oos_start]).equity.filter(pl.col("ts") >= ts[oos_start])
        growth = oos["equity"] / config.init_cash
        pieces.append(oos.select("ts").with_columns((growth * level).alias("equity")))
        level *= float(growth[-1])
        ppy = periods_per_year(config.timeframe)
        rows.append(
            {
                "fold": k,
                "is_start": ts[is_start],
                "oos_start": ts[oos_start],
                "oos_end": ts[oos_end - 1],
                **{f"param_{name}": value for name, value in chosen.model_dump().items()},
                "is_return": is_return,
                "oos_return": float(growth[-1]) - 1.0,
                "is_annualized": (1 + is_return) ** (ppy / (oos_start - is_start)) - 1,
                "oos_annualized": float(growth[-1]) ** (ppy / (oos_end - oos_start)) - 1,
            }
        )
        if progress:
            progress(k + 1, folds)
    table = pl.DataFrame(rows)
    mean_is = float(table["is_annualized"].mean())  # type: ignore[arg-type]
    efficiency = float(table["oos_annualized"].mean()) / mean_is if mean_is else float("nan")  # type: ignore[arg-type]
    varying = [c for c in table.columns if c.startswith("param_") and pl.DataFrame([p.model_dump() for p in grid])[c.removeprefix("param_")].n_unique() > 1]
    stability = {c.removeprefix("param_"): float(table[c].value_counts()["count"].max()) / folds for c in varying}  # type: ignore[arg-type]
    return WalkForwardResult(table, pl.concat(pieces), efficiency, stability, winners)
