"""Monte Carlo resampling: the draws are what they claim to be, and the statistics follow from them."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from backtests.montecarlo import MonteCarloResult, bootstrap_returns, trade_reshuffle

TRADES = np.array([0.05, -0.03, 0.02, -0.08, 0.04, 0.01, -0.02, 0.06, -0.05, 0.03])


def draws(result: MonteCarloResult) -> np.ndarray:
    """Recover the per-step returns each path compounded (equity ratios minus one)."""
    return result.paths[:, 1:] / result.paths[:, :-1] - 1.0


def test_reshuffle_permutes_the_same_trades() -> None:
    result = trade_reshuffle(TRADES, 500, seed=3)
    assert result.method == "trade_reshuffle"
    assert result.paths.shape == (500, TRADES.size + 1)
    assert np.all(result.paths[:, 0] == 1.0)
    recovered = np.sort(draws(result), axis=1)
    np.testing.assert_allclose(recovered, np.broadcast_to(np.sort(TRADES), recovered.shape), atol=1e-12)
    # and the order really is shuffled: many distinct sequences, not one
    assert len({tuple(np.round(row, 9)) for row in draws(result)}) > 400


def test_reshuffle_final_return_is_the_compounded_product_drawdown_varies() -> None:
    result = trade_reshuffle(TRADES, 2_000, seed=1)
    expected = float(np.prod(1.0 + TRADES) - 1.0)
    np.testing.assert_allclose(result.final_returns, expected, rtol=0, atol=1e-12)
    # the order changes the drawdown only
    assert result.max_drawdowns.std() > 0.01
    assert result.max_drawdowns.min() >= 0.08 - 1e-12  # the worst single trade is always a drawdown
    assert result.max_drawdowns.max() <= 1.0 - np.prod(1.0 + TRADES[TRADES < 0]) + 1e-12


def test_max_drawdown_matches_a_direct_computation() -> None:
    result = bootstrap_returns(TRADES, 300, n_steps=40, seed=2)
    peak = np.maximum.accumulate(result.paths, axis=1)
    np.testing.assert_allclose(result.max_drawdowns, (1.0 - result.paths / peak).max(axis=1), atol=1e-12)
    np.testing.assert_allclose(result.final_returns, result.paths[:, -1] - 1.0)


def test_block_bootstrap_draws_runs_of_consecutive_returns() -> None:
    n, block, steps = 17, 5, 23  # block does not divide n_steps: the last block is cut short
    source = 0.001 * (np.arange(n) + 1.0)  # strictly increasing: a return identifies its index
    result = bootstrap_returns(source, 1_000, n_steps=steps, block=block, seed=4)
    assert result.method == "block_bootstrap"
    assert result.paths.shape == (1_000, steps + 1)
    idx = np.rint(draws(result) / 0.001).astype(int) - 1
    np.testing.assert_allclose(source[idx], draws(result), atol=1e-12)  # spacing 1e-3 >> float error
    within = np.array([t for t in range(1, steps) if t % block != 0])
    assert np.all(idx[:, within] == (idx[:, within - 1] + 1) % n)
    # wrap-around happens, and block boundaries are fresh uniform starts, not continuations
    assert np.any((idx[:, within - 1] == n - 1) & (idx[:, within] == 0))
    boundaries = np.arange(block, steps, block)
    continued = idx[:, boundaries] == (idx[:, boundaries - 1] + 1) % n
    assert 0.02 < continued.mean() < 0.15  # 1 / n = 0.059 by chance
    assert set(np.unique(idx[:, 0])) == set(range(n))


def test_iid_bootstrap_draws_every_return_uniformly() -> None:
    source = 0.001 * (np.arange(8) + 1.0)
    result = bootstrap_returns(source, 5_000, n_steps=20, seed=5)
    assert result.method == "iid_bootstrap"
    idx = np.rint(draws(result) / 0.001).astype(int) - 1
    counts = np.bincount(idx.ravel(), minlength=8) / idx.size
    # 100,000 draws: the sd of each share is sqrt(1/8 * 7/8 / 1e5) = 0.001, so 0.006 is 6 sd
    np.testing.assert_allclose(counts, 1 / 8, atol=0.006)


def test_iid_bootstrap_mean_final_return_matches_the_analytic_expectation() -> None:
    source = np.array([-0.04, -0.01, 0.0, 0.02, 0.05])
    steps, n_paths = 30, 200_000
    result = bootstrap_returns(source, n_paths, n_steps=steps, seed=6)
    # iid draws from the empirical distribution: E[prod(1 + r_t)] = E[1 + r]^T
    growth = 1.0 + source
    expected = growth.mean() ** steps - 1.0
    variance = (growth**2).mean() ** steps - growth.mean() ** (2 * steps)
    # 5 standard errors of the mean (~0.002): a correct simulation misses it with probability < 1e-6
    # (and the seed makes the draw deterministic anyway), yet it is tight enough to reject summing
    # instead of compounding, whose expectation T * E[r] = 0.132 lies 0.009 below 0.141
    tolerance = 5.0 * math.sqrt(variance / n_paths)
    mean = float(result.final_returns.mean())
    assert mean == pytest.approx(expected, abs=tolerance)
    assert abs(mean - steps * source.mean()) > 2 * tolerance


def test_no_ruin_when_every_return_is_positive() -> None:
    positive = np.array([0.01, 0.02, 0.005, 0.03])
    for result in (
        trade_reshuffle(positive, 200),
        bootstrap_returns(positive, 200),
        bootstrap_returns(positive, 200, block=3),
    ):
        assert result.ruin_probability == 0.0
        assert np.all(result.max_drawdowns == 0.0)


def test_ruin_is_certain_when_every_path_has_a_trade_beyond_ruin_loss() -> None:
    trades = np.array([0.10, 0.20, -0.60, 0.15, 0.05])
    # 1.1 * 1.2 * 1.15 * 1.05 = 1.594 is the highest peak before the loss: 0.4 * 1.594 < 0.7
    result = trade_reshuffle(trades, 1_000, ruin_loss=0.3)
    assert result.ruin_probability == 1.0
    # with ruin at -50% the same trade ruins only the paths where it comes early enough
    partial = trade_reshuffle(trades, 1_000, ruin_loss=0.5)
    assert 0.0 < partial.ruin_probability < 1.0
    assert partial.ruin_loss == 0.5


def test_ruin_threshold_is_inclusive() -> None:
    result = trade_reshuffle(np.array([-0.5]), 10, ruin_loss=0.5)  # 1 * (1 - 0.5) is exactly 0.5
    assert result.ruin_probability == 1.0
    assert np.all(result.max_drawdowns == 0.5)


def test_percentiles_are_monotone_across_q_at_every_step() -> None:
    result = bootstrap_returns(TRADES, 2_000, n_steps=50, block=3, seed=7)
    fan = result.percentiles()
    assert list(fan) == [5, 25, 50, 75, 95]
    curves = np.stack(list(fan.values()))
    assert curves.shape == (5, 51)
    assert np.all(curves[:, 0] == 1.0)
    assert np.all(np.diff(curves, axis=0) >= 0.0)
    assert np.any(np.diff(curves, axis=0) > 0.0)
    np.testing.assert_allclose(fan[50], np.median(result.paths, axis=0))
    assert list(result.percentiles((10, 90))) == [10, 90]
    with pytest.raises(ValueError, match="qs"):
        result.percentiles((50, 101))


def test_summary_reports_final_return_drawdown_and_ruin() -> None:
    result = bootstrap_returns(TRADES, 3_000, seed=8)
    summary = result.summary()
    assert set(summary) == {
        *(f"{name}_{stat}" for name in ("final_return", "max_drawdown") for stat in ("mean", "median", "p5", "p95")),
        "ruin_probability",
    }
    assert all(isinstance(value, float) for value in summary.values())
    assert summary["final_return_p5"] <= summary["final_return_median"] <= summary["final_return_p95"]
    assert summary["max_drawdown_p5"] <= summary["max_drawdown_median"] <= summary["max_drawdown_p95"]
    assert summary["final_return_mean"] == pytest.approx(float(result.final_returns.mean()))
    assert summary["ruin_probability"] == result.ruin_probability


def test_result_is_immutable() -> None:
    result = trade_reshuffle(TRADES, 10)
    with pytest.raises(ValueError):
        result.paths[0, 0] = 2.0
    with pytest.raises(AttributeError):
        result.ruin_loss = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "run",
    [
        lambda seed: trade_reshuffle(TRADES, 50, seed=seed),
        lambda seed: bootstrap_returns(TRADES, 50, seed=seed),
        lambda seed: bootstrap_returns(TRADES, 50, block=4, seed=seed),
    ],
    ids=["reshuffle", "iid", "block"],
)
def test_seeded_reproducibility(run: Callable[[int], MonteCarloResult]) -> None:
    first, again, other = run(11), run(11), run(12)
    np.testing.assert_array_equal(first.paths, again.paths)
    np.testing.assert_array_equal(first.max_drawdowns, again.max_drawdowns)
    assert first.ruin_probability == again.ruin_probability
    assert not np.array_equal(first.paths, other.paths)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"returns": np.array([])}, r"returns must not be empty.*\(0,\)"),
        ({"returns": np.array([0.01, np.nan])}, r"returns must be finite, got nan at index 1"),
        ({"returns": np.array([0.01, np.inf])}, r"returns must be finite, got inf"),
        ({"returns": np.array([0.01, -1.5])}, r"returns must be >= -1.*-1\.5"),
        ({"returns": np.ones((2, 2)) * 0.01}, r"returns must be 1-D.*\(2, 2\)"),
        ({"n_paths": 0}, r"n_paths must be >= 1, got 0"),
        ({"n_paths": -5}, r"n_paths must be >= 1, got -5"),
        ({"n_paths": 2.5}, r"n_paths must be an integer, got 2\.5"),
        ({"block": 0}, r"block must be in \[1, 10\], got 0"),
        ({"block": 11}, r"block must be in \[1, 10\], got 11"),
        ({"n_steps": 0}, r"n_steps must be >= 1, got 0"),
        ({"ruin_loss": 0.0}, r"ruin_loss must be in \(0, 1\), got 0\.0"),
        ({"ruin_loss": 1.0}, r"ruin_loss must be in \(0, 1\), got 1\.0"),
        ({"ruin_loss": -0.2}, r"ruin_loss must be in \(0, 1\), got -0\.2"),
        ({"ruin_loss": float("nan")}, r"ruin_loss must be in \(0, 1\), got nan"),
    ],
)
def test_bootstrap_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"returns": TRADES, **kwargs}
    with pytest.raises(ValueError, match=message):
        bootstrap_returns(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trade_returns": np.array([])}, r"trade_returns must not be empty"),
        ({"trade_returns": np.array([np.nan, 0.01])}, r"trade_returns must be finite, got nan at index 0"),
        ({"n_paths": 0}, r"n_paths must be >= 1, got 0"),
        ({"ruin_loss": 1.5}, r"ruin_loss must be in \(0, 1\), got 1\.5"),
        ({"ruin_loss": 0.0}, r"ruin_loss must be in \(0, 1\), got 0\.0"),
    ],
)
def test_reshuffle_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"trade_returns": TRADES, **kwargs}
    with pytest.raises(ValueError, match=message):
        trade_reshuffle(**args)  # type: ignore[arg-type]
