"""Parameter sweeps: every combination of a grid, simulated in one compiled, parallel pass.

`sweep` works for any single-symbol strategy: signals are computed per combination with the
strategy's own function, stacked into (bar x combination) arrays a chunk at a time, and simulated
together. `sweep_sma_cross` is the fused path for the moving-average crossover: each distinct
average is computed once and the signal arrays never exist, which makes million-bar grids cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from backtests.engine import BacktestConfig, BacktestError, fee_fractions, has_levels, to_market
from backtests.sweep_nb import bracket_sweep_nb, signals_sweep_nb, sma_cross_sweep_nb
from strategies import indicators as ind
from strategies.base import Strategy, StrategyParams
from strategies.builtin import SmaCrossParams

CHUNK = 64  # combinations per pass of the generic path: bounds memory at 4 x bars x CHUNK bytes
SIDES = ("entry_long", "exit_long", "entry_short", "exit_short")


def _check(bars: pl.DataFrame, config: BacktestConfig) -> None:
    if bars.is_empty():
        raise BacktestError("sweep: no bars (empty range or unknown symbol?)")
    if bars["symbol"].n_unique() != 1:
        raise BacktestError(f"sweep: one symbol at a time, got {sorted(bars['symbol'].unique().to_list())}")
    if config.slippage_atr:
        raise BacktestError("sweep: slippage_atr is not supported; use slippage_bps")


def _table(grid: Sequence[StrategyParams], final: np.ndarray, max_dd: np.ndarray, orders: np.ndarray, config: BacktestConfig) -> pl.DataFrame:
    params = pl.DataFrame([p.model_dump() for p in grid])
    varying = [c for c in params.columns if params[c].n_unique() > 1] or params.columns[:1]
    return params.select(varying).with_columns(
        pl.Series("final_equity", final),
        pl.Series("total_return", final / config.init_cash - 1.0),
        pl.Series("max_drawdown", max_dd),
        pl.Series("orders", orders),
    )


def sweep_sma_cross(
    bars: pl.DataFrame,
    fast: Sequence[int],
    slow: Sequence[int],
    config: BacktestConfig | None = None,
    *,
    fraction: float = 1.0,
) -> pl.DataFrame:
    """Every (fast < slow) pair on one symbol's bars: final equity, return, drawdown, order count."""
    config = config or BacktestConfig()
    _check(bars, config)
    grid = [SmaCrossParams(fast=f, slow=s, fraction=fraction, allow_short=config.allow_short) for f in fast for s in slow if f < s]
    if not grid:
        raise BacktestError(f"sweep: no valid (fast < slow) pair in fast={list(fast)}, slow={list(slow)}")
    ordered = bars.sort("ts")
    windows = sorted({p.fast for p in grid} | {p.slow for p in grid})
    means = ordered.select(ind.sma(w).alias(str(w)) for w in windows).to_numpy().T.copy()
    row = {w: i for i, w in enumerate(windows)}
    market = to_market(ordered.with_columns(*(pl.lit(False).alias(c) for c in ("entry_long", "exit_long", "entry_short", "exit_short")), pl.lit(1.0).alias("size")))
    fill = market.open[:, 0] if config.fill == "next_open" else market.close[:, 0]
    final, max_dd, orders = sma_cross_sweep_nb(
        np.ascontiguousarray(fill),
        np.ascontiguousarray(market.close[:, 0]),
        means,
        np.array([row[p.fast] for p in grid]),
        np.array([row[p.slow] for p in grid]),
        np.ascontiguousarray(fee_fractions(market, config)[:, 0]),
        config.slippage_bps / 1e4,
        config.init_cash,
        fraction,
        not config.fractional,
        config.allow_short,
    )
    return _table(grid, final, max_dd, orders, config)


def sweep(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Any strategy over an explicit grid on one symbol; `progress(done, total)` after each chunk."""
    config = config or BacktestConfig()
    _check(bars, config)
    if not grid:
        raise BacktestError("sweep: empty parameter grid")
    ordered = bars.sort("ts")
    base = to_market(strategy.signals(ordered, grid[0]))
    if config.brackets and has_levels(base):
        return _bracket_sweep(ordered, strategy, grid, config, progress)
    fill = np.ascontiguousarray((base.open if config.fill == "next_open" else base.close)[:, 0])
    close = np.ascontiguousarray(base.close[:, 0])
    fee = np.ascontiguousarray(fee_fractions(base, config)[:, 0])

    def run(signals: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        *sides, size = signals
        return _kernel(signals_sweep_nb)(
            fill, close, *sides, size, fee, config.slippage_bps / 1e4, config.init_cash, not config.fractional
        )

    return _in_chunks(ordered, strategy, grid, config, progress, run, levels=False)


def _kernel(fn: Any) -> Callable[..., tuple[np.ndarray, ...]]:
    """A numba kernel as a plain callable for the type checker (its stubs reject star arguments)."""
    return fn  # type: ignore[no-any-return]


def _in_chunks(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig,
    progress: Callable[[int, int], None] | None,
    run: Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]],
    *,
    levels: bool,
) -> pl.DataFrame:
    """Signals of CHUNK combinations at a time, stacked (bar x combination) and handed to `run`:
    entry/exit long, entry/exit short (all False unless the run allows shorts), size, and with
    `levels` stop, target 1, target 2."""
    results = []
    for start in range(0, len(grid), CHUNK):
        chunk = grid[start : start + CHUNK]
        frames = [strategy.signals(bars, p) for p in chunk]

        def stack(column: str, dtype: type, frames: list[pl.DataFrame] = frames) -> np.ndarray:
            return np.ascontiguousarray(np.column_stack([f[column].to_numpy() for f in frames]), dtype=dtype)

        no_short = np.zeros((bars.height, len(chunk)), dtype=np.bool_)
        sides = [stack(c, np.bool_) if config.allow_short or "short" not in c else no_short for c in SIDES]
        extra = [stack(c, np.float64) for c in ("size", *(("stop", "target1", "target2") if levels else ()))]
        results.append(run((*sides, *extra)))
        if progress:
            progress(min(start + CHUNK, len(grid)), len(grid))
    final, max_dd, orders = (np.concatenate([r[i] for r in results]) for i in range(3))
    return _table(grid, final, max_dd, orders, config)


def _bracket_sweep(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig,
    progress: Callable[[int, int], None] | None,
) -> pl.DataFrame:
    """Strategies with bracket levels: the compiled loop with the engine's bracket rules."""
    base = to_market(strategy.signals(bars, grid[0]))

    def col(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values[:, 0], dtype=np.float64)

    prices = (col(base.open if config.fill == "next_open" else base.close), col(base.open), col(base.high), col(base.low), col(base.close))
    fee = np.ascontiguousarray(fee_fractions(base, config)[:, 0])

    def run(signals: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return _kernel(bracket_sweep_nb)(
            *prices, *signals, fee, config.fees_bps / 1e4, config.fee_per_share, config.slippage_bps / 1e4,
            config.init_cash, not config.fractional,
        )

    return _in_chunks(bars, strategy, grid, config, progress, run, levels=True)
