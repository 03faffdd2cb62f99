"""Monte Carlo robustness checks for a backtest: how lucky was the order of its returns?

A single backtest is one path. Resampling its trades or bar returns gives a distribution of equity
paths, from which drawdown and ruin risk are read off instead of trusted from one sample.

- `trade_reshuffle`: every path is a random permutation of the same per-trade returns. The final
  return is fixed (multiplication commutes); only the path, hence the drawdown, varies.
- `bootstrap_returns`: paths are drawn with replacement, iid (block=1) or as a circular block
  bootstrap (block > 1) that keeps short-range autocorrelation (volatility clustering).

Returns are fractional returns on equity, compounded: equity *= 1 + r, starting at 1.0. The random
draws come from NumPy's seeded `Generator`; the compiled kernels only compound, so the results do
not depend on Numba's own RNG state.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

DEFAULT_QS: tuple[int, ...] = (5, 25, 50, 75, 95)


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array __eq__ would make == raise
class MonteCarloResult:
    """Simulated equity paths and their per-path statistics (arrays are read-only)."""

    method: str
    paths: np.ndarray  # (n_paths, n_steps + 1), equity normalised to 1.0 at step 0
    final_returns: np.ndarray  # (n_paths,), equity at the last step - 1
    max_drawdowns: np.ndarray  # (n_paths,), positive fractions of the running peak
    ruin_probability: float  # share of paths whose equity ever reaches <= 1 - ruin_loss
    ruin_loss: float

    def percentiles(self, qs: Sequence[int] = DEFAULT_QS) -> dict[int, np.ndarray]:
        """Per-step percentile curves of equity (a fan chart), keyed by percentile."""
        keys = [int(q) for q in qs]
        bad = [q for q in keys if not 0 <= q <= 100]
        if bad:
            raise ValueError(f"qs must lie in [0, 100], got {bad}")
        if not keys:
            return {}
        curves = np.percentile(self.paths, keys, axis=0)
        return {q: curves[i] for i, q in enumerate(keys)}

    def summary(self) -> dict[str, float]:
        """Headline numbers: centre and tails of final return and max drawdown, and ruin risk."""
        out: dict[str, float] = {}
        for name, values in (("final_return", self.final_returns), ("max_drawdown", self.max_drawdowns)):
            p5, p50, p95 = np.percentile(values, [5, 50, 95])
            out[f"{name}_mean"] = float(np.mean(values))
            out[f"{name}_median"] = float(p50)
            out[f"{name}_p5"] = float(p5)
            out[f"{name}_p95"] = float(p95)
        out["ruin_probability"] = self.ruin_probability
        return out


@njit(cache=True)
def _compound_row(row: np.ndarray, i: int, paths: np.ndarray, floor: float) -> tuple[float, bool]:
    """Compound one row of draws into paths[i]; return its max drawdown and whether it hit floor."""
    equity = 1.0
    peak = 1.0
    max_dd = 0.0
    ruined = False
    paths[i, 0] = 1.0
    for t in range(row.shape[0]):
        equity *= 1.0 + row[t]
        paths[i, t + 1] = equity
        if equity > peak:
            peak = equity
        dd = 1.0 - equity / peak
        if dd > max_dd:
            max_dd = dd
        if equity <= floor:
            ruined = True
    return max_dd, ruined


@njit(cache=True)
def _reshuffle_nb(
    trades: np.ndarray, uniforms: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fisher-Yates shuffle of trades per path, driven by pre-drawn uniforms, then compound.

    uniforms[i, k] picks the swap partner for position n - 1 - k among 0..n-1-k; a float64 in
    [0, 1) scaled to at most n choices is biased by < n / 2**53, far below Monte Carlo noise.
    """
    n_paths = uniforms.shape[0]
    n = trades.shape[0]
    paths = np.empty((n_paths, n + 1))
    max_dd = np.empty(n_paths)
    ruined = np.empty(n_paths, dtype=np.bool_)
    row = np.empty(n)
    for i in range(n_paths):
        row[:] = trades
        for k in range(n - 1):
            pos = n - 1 - k
            j = int(uniforms[i, k] * (pos + 1))
            tmp = row[pos]
            row[pos] = row[j]
            row[j] = tmp
        max_dd[i], ruined[i] = _compound_row(row, i, paths, floor)
    return paths, max_dd, ruined


@njit(cache=True)
def _bootstrap_nb(
    returns: np.ndarray, starts: np.ndarray, block: int, n_steps: int, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paths made of blocks returns[start], returns[start + 1], ... (mod n), cut to n_steps."""
    n_paths = starts.shape[0]
    n = returns.shape[0]
    paths = np.empty((n_paths, n_steps + 1))
    max_dd = np.empty(n_paths)
    ruined = np.empty(n_paths, dtype=np.bool_)
    row = np.empty(n_steps)
    for i in range(n_paths):
        t = 0
        for b in range(starts.shape[1]):  # no per-step division: it would dominate the loop
            src = starts[i, b]
            for _ in range(min(block, n_steps - t)):
                row[t] = returns[src]
                t += 1
                src += 1
                if src == n:
                    src = 0
        max_dd[i], ruined[i] = _compound_row(row, i, paths, floor)
    return paths, max_dd, ruined


def _check_returns(name: str, values: np.ndarray) -> np.ndarray:
    """1-D, non-empty, finite and >= -1 (a trade cannot lose more than all of equity)."""
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} must be finite, got {arr[bad[0]]} at index {bad[0]}")
    below = np.flatnonzero(arr < -1.0)
    if below.size:
        raise ValueError(f"{name} must be >= -1 (loss of all equity), got {arr[below[0]]} at index {below[0]}")
    return arr


def _check_count(name: str, value: int, low: int, high: int | None = None) -> int:
    """An integer in [low, high]; bools and floats are rejected rather than silently truncated."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if n < low or (high is not None and n > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {n}")
    return n


def _check_ruin_loss(ruin_loss: float) -> float:
    loss = float(ruin_loss)
    if not 0.0 < loss < 1.0:  # also rejects NaN
        raise ValueError(f"ruin_loss must be in (0, 1), got {ruin_loss!r}")
    return loss


def _result(
    method: str, paths: np.ndarray, max_dd: np.ndarray, ruined: np.ndarray, ruin_loss: float
) -> MonteCarloResult:
    final = paths[:, -1] - 1.0
    for arr in (paths, final, max_dd):
        arr.setflags(write=False)  # the dataclass is frozen; make its arrays so too
    return MonteCarloResult(
        method=method,
        paths=paths,
        final_returns=final,
        max_drawdowns=max_dd,
        ruin_probability=float(np.mean(ruined)),
        ruin_loss=ruin_loss,
    )


def trade_reshuffle(
    trade_returns: np.ndarray, n_paths: int = 10_000, *, ruin_loss: float = 0.5, seed: int = 0
) -> MonteCarloResult:
    """Each path compounds a random permutation of the same trades (sequence risk only)."""
    trades = _check_returns("trade_returns", trade_returns)
    n_paths = _check_count("n_paths", n_paths, 1)
    loss = _check_ruin_loss(ruin_loss)
    rng = np.random.default_rng(seed)
    uniforms = rng.random((n_paths, trades.size - 1))
    paths, max_dd, ruined = _reshuffle_nb(trades, uniforms, 1.0 - loss)
    return _result("trade_reshuffle", paths, max_dd, ruined, loss)


def bootstrap_returns(
    returns: np.ndarray,
    n_paths: int = 10_000,
    *,
    n_steps: int | None = None,
    block: int = 1,
    ruin_loss: float = 0.5,
    seed: int = 0,
) -> MonteCarloResult:
    """Paths of returns drawn with replacement: iid (block=1) or circular blocks (block > 1).

    Blocks start at uniform positions and wrap around the end, so every return is equally likely
    to be drawn (the plain moving-block bootstrap under-samples the ends). n_steps defaults to
    len(returns); the last block is cut short when block does not divide n_steps.
    """
    arr = _check_returns("returns", returns)
    n_paths = _check_count("n_paths", n_paths, 1)
    steps = arr.size if n_steps is None else _check_count("n_steps", n_steps, 1)
    block = _check_count("block", block, 1, arr.size)
    loss = _check_ruin_loss(ruin_loss)
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(steps / block)
    starts = rng.integers(0, arr.size, size=(n_paths, n_blocks))
    paths, max_dd, ruined = _bootstrap_nb(arr, starts, block, steps, 1.0 - loss)
    method = "iid_bootstrap" if block == 1 else "block_bootstrap"
    return _result(method, paths, max_dd, ruined, loss)
