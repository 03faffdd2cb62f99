"""donchian_breakout's event-to-event sweep deals its combinations into chunks run on Python threads
(`backtests/sweep_channel_fast_nb.py`: combinations c, c + chunks, ... in chunk c, each a nogil
compiled call): every number is the same however many chunks there are, none is left unwritten, and
the channels' bits are the same dealt to any number of threads. The arrays the chunks read are
unowned views (`unowned_nb`): same data, no owner."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pytest
from numba import njit

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig
from backtests.sweep import expand_grid, sweep
from backtests.sweep_channel_fast_nb import channel_bits_nb, channel_fast_sweep_nb, unowned_nb
from strategies.builtin import DONCHIAN_BREAKOUT
from tests.backtests.test_sweep_threshold_fast import walk_bars

BARS = walk_bars(3_000, seed=5)
GRID: dict[str, list[Any]] = {"entry_window": [5, 20, 40], "exit_window": [3, 8], "stop_atr": [0.5, 2.0], "target1_atr": [1.0, 3.0]}
CONFIG = BacktestConfig(fees_bps=2.0, slippage_bps=4.0, allow_short=True)


def _kernel_args(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """The arguments the sweep hands the event-to-event kernel for GRID (chunks last)."""
    captured: list[tuple[Any, ...]] = []

    def spy(*args: Any) -> Any:
        captured.append(args)
        return channel_fast_sweep_nb(*args)

    monkeypatch.setattr(sweep_module, "channel_fast_sweep_nb", spy)
    sweep(BARS, DONCHIAN_BREAKOUT, expand_grid(DONCHIAN_BREAKOUT, {"allow_short": True}, GRID), CONFIG)
    assert len(captured) == 1
    return captured[0]


def test_any_number_of_chunks_gives_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _kernel_args(monkeypatch)
    combinations = len(args[9])
    assert combinations == 24
    one = channel_fast_sweep_nb(*args[:-1], 1)
    assert (one[2] > 0).all() and np.isfinite(one[0]).all()
    # 2: the route's own; 5 and 7 do not divide 24 (the last chunks are shorter); 24: one each.
    for chunks in (2, 5, 7, 24):
        got = channel_fast_sweep_nb(*args[:-1], chunks)
        for a, b in zip(one, got, strict=True):
            assert a.tobytes() == b.tobytes(), chunks


def test_the_channel_bits_are_the_same_on_any_number_of_threads() -> None:
    high, low, close = (np.ascontiguousarray(BARS[c].to_numpy()) for c in ("high", "low", "close"))
    windows = np.array([2, 3, 5, 8, 20, 64, 1_000], dtype=np.int64)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        up1, down1 = channel_bits_nb(high, low, close, windows)
    finally:
        numba.set_num_threads(threads)
    up, down = channel_bits_nb(high, low, close, windows)
    assert up1.any() and down1.any()
    assert np.array_equal(up, up1) and np.array_equal(down, down1)


@njit
def _through_unowned(x: np.ndarray) -> tuple[float, int]:
    view = unowned_nb(x)
    view[1] = 7.0  # the same data: written through the view, read in the owner
    return x[1], view.shape[0]


def test_an_unowned_view_is_the_array_itself() -> None:
    x = np.arange(5.0)
    assert _through_unowned(x) == (7.0, 5)
    assert x[1] == 7.0
