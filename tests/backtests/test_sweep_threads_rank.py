"""cross_sectional_momentum's compiled sweep deals its combinations into chunks run on Python threads
(`backtests/sweep_rank_nb.py`: groups of combinations sharing a ranking and top_k, dealt round robin,
each chunk a nogil compiled call running its combinations a block of bars at a time on scratch arrays
set up per call): the same bytes on one thread or several, each combination the same alone as among
others, and the same for any block length."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pytest

from backtests import sweep as sweep_module
from backtests import sweep_rank_nb
from backtests.engine import BacktestConfig
from backtests.sweep import expand_grid, sweep
from backtests.sweep_rank_nb import rank_sweep_nb
from strategies.builtin import MOMENTUM
from tests.backtests.test_sweep_rank import GRID, universe

CONFIG = BacktestConfig(fees_bps=3.0, fee_per_share=0.005, slippage_bps=5.0)
MAX_THREADS: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import, untyped


def _kernel_args(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    captured: list[tuple[Any, ...]] = []

    def spy(*args: Any) -> Any:
        captured.append(args)
        return rank_sweep_nb(*args)

    monkeypatch.setattr(sweep_module, "rank_sweep_nb", spy)
    grid = expand_grid(MOMENTUM, {"vol_target": 2.0, "max_weight": 0.7}, GRID)
    sweep(universe(3), MOMENTUM, grid, CONFIG)
    assert len(captured) == 1
    return captured[0]


def _on_threads(threads: int, args: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(threads)
        return rank_sweep_nb(*args)
    finally:
        numba.set_num_threads(before)


def test_one_thread_or_several_give_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _kernel_args(monkeypatch)
    one = _on_threads(1, args)
    assert (one[2] > 0).all()
    for threads in range(2, MAX_THREADS + 1):
        got = _on_threads(threads, args)
        for a, b in zip(one, got, strict=True):
            assert a.tobytes() == b.tobytes(), threads


def test_each_combination_alone_equals_it_after_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread runs every combination on one set of scratch arrays: run alone, each starts from a
    fresh set (a state left by the one before would show here)."""
    args = _kernel_args(monkeypatch)
    together = _on_threads(1, args)
    rank_row, top_k, vol_row, vol_target, max_weight = args[3], args[4], args[6], args[7], args[8]
    for k in range(len(rank_row)):
        alone = _on_threads(1, (*args[:3], rank_row[k : k + 1], top_k[k : k + 1], args[5], vol_row[k : k + 1], vol_target[k : k + 1], max_weight[k : k + 1], *args[9:]))
        for a, b in zip(together, alone, strict=True):
            assert a[k : k + 1].tobytes() == b.tobytes(), k


@pytest.mark.parametrize("bars_per_block", [1, 2, 7, 64])
def test_any_block_of_bars_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch, bars_per_block: int) -> None:
    """A chunk runs its combinations a block of bars at a time, each carrying its state (positions,
    orders decided on a block's last bar, the drawdown's lowest equity) into the next block: any
    block length gives the bytes of one block over all the bars."""
    args = _kernel_args(monkeypatch)
    n, m = args[1].shape
    monkeypatch.setattr(sweep_rank_nb, "BLOCK_CELLS", n * m)
    whole = _on_threads(1, args)
    monkeypatch.setattr(sweep_rank_nb, "BLOCK_CELLS", bars_per_block * m)
    monkeypatch.setattr(sweep_rank_nb, "MIN_BLOCK", 1)
    for threads in (1, MAX_THREADS):
        got = _on_threads(threads, args)
        for a, b in zip(whole, got, strict=True):
            assert a.tobytes() == b.tobytes(), (bars_per_block, threads)
