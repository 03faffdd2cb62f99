"""Parity over grids, not points (issue 18): for every built-in strategy, a grid of its parameters x
several seeds of the offline generator x costs (fees, per-share fees, slippage; whole and fractional
shares) x long-only and long-short, on four symbols sharing one cash balance:
- the engine equals the plain reference loop: the same orders (bar, symbol, side; shares 1e-9,
  price 1e-12, fees 1e-9) and the same equity at every bar (1e-9);
- the compiled sweep equals the engine per combination (final equity, max drawdown, order count),
  on one symbol (on the whole universe for a cross-sectional ranking), for every built-in.
The grid holds all-in and partial sizes, so entries compete for cash on a bar (the free-cash cap
binds) and some entries get no shares; the test asserts that it does. Where the two disagreed,
the README's rule decided which was wrong (`strategies/entries.py`, `backtests/order_sim.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from backtests.sweep import sweep
from lake.sources.synthetic import SyntheticSource
from strategies.base import Strategy
from strategies.builtin import DONCHIAN_BREAKOUT, MOMENTUM, RSI_REVERSION, SMA_CROSS
from tests.backtests.reference import reference_backtest

SEEDS = (11, 12, 13)
SYMBOLS = ["AAPL", "JPM", "MSFT", "XOM"]
SWEPT_SYMBOL = "JPM"
COSTS: dict[str, dict[str, Any]] = {
    "free": {},
    "fees_per_share": {"fees_bps": 5.0, "fee_per_share": 0.005},
    "fees_slippage_fractional": {"fees_bps": 2.0, "slippage_bps": 10.0, "fractional": True},
}
# Per strategy: all-in entries (several compete for the cash), partial ones, each sizing mode.
GRIDS: dict[str, tuple[Strategy[Any], list[dict[str, Any]]]] = {
    "sma_cross": (
        SMA_CROSS,
        [
            {"fast": 3, "slow": 12},
            {"fast": 6, "slow": 21, "fraction": 0.5},
            {"fast": 5, "slow": 20, "sizing": "volatility", "vol_target": 0.02},
            {"fast": 8, "slow": 30, "sizing": "risk", "risk_per_trade": 0.02, "fraction": 0.8, "atr_period": 10},
        ],
    ),
    "rsi_reversion": (
        RSI_REVERSION,
        [
            {"period": 5, "lower": 35.0, "upper": 65.0},
            {"period": 10, "lower": 30.0, "upper": 70.0, "fraction": 0.6},
            {"period": 7, "lower": 40.0, "upper": 60.0, "sizing": "volatility", "vol_target": 0.02},
            {"period": 14, "lower": 35.0, "upper": 65.0, "exit_level": 45.0, "sizing": "risk", "risk_per_trade": 0.03},
        ],
    ),
    "donchian_breakout": (
        DONCHIAN_BREAKOUT,
        [
            {"entry_window": 10, "exit_window": 5},
            {"entry_window": 16, "exit_window": 8, "sizing": "volatility", "vol_target": 0.02, "fraction": 0.5},
            {"entry_window": 20, "exit_window": 10, "fraction": 0.4, "target1_atr": 1.0, "stop_atr": 1.5},
            {"entry_window": 12, "exit_window": 6, "sizing": "risk", "risk_per_trade": 0.02, "target2_atr": 3.0},
        ],
    ),
    "cross_sectional_momentum": (
        MOMENTUM,
        [
            {"lookback": 10, "top_k": 1, "vol_window": 10, "vol_target": 2.0},
            {"lookback": 20, "top_k": 2, "vol_window": 10, "vol_target": 0.3},
            {"lookback": 10, "top_k": 3, "vol_window": 5, "vol_target": 2.0, "max_weight": 1.0},
            {"lookback": 15, "top_k": 2, "skip": 0, "vol_window": 10, "vol_target": 0.6, "max_weight": 0.8},
        ],
    ),
}


@cache
def _bars(seed: int) -> pl.DataFrame:
    return SyntheticSource(seed=seed).fetch(SYMBOLS, "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC))


@dataclass
class Tally:
    combinations: int = 0
    bars: int = 0
    rows: int = 0  # orders and equity rows compared
    differing: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    sweep_rows: int = 0


def _compare(tally: Tally, label: str, bars: pl.DataFrame, strategy: Strategy[Any], p: Any, costs: dict[str, Any], short: bool) -> None:
    config = BacktestConfig(init_cash=100_000, allow_short=short, **costs)
    result = run_backtest(bars, strategy, p, config)
    equity, fills = reference_backtest(strategy.signals(bars, p), init_cash=100_000, allow_short=short, stats=tally.stats, **costs)
    tally.combinations += 1
    tally.bars += result.equity.height
    tally.rows += max(result.orders.height, len(fills)) + result.equity.height
    # Within a bar, orders of different symbols may be listed in either order.
    got = sorted(result.orders.rows(), key=lambda o: (o[0], o[1], o[2]))
    want = sorted(((f.ts, f.symbol, f.side, f.size, f.price, f.fees) for f in fills), key=lambda o: (o[0], o[1], o[2]))
    for k in range(max(len(got), len(want))):
        a, b = (got[k] if k < len(got) else None), (want[k] if k < len(want) else None)
        same = (
            a is not None
            and b is not None
            and a[:3] == b[:3]
            and np.isclose(a[3], b[3], rtol=1e-9, atol=0)
            and np.isclose(a[4], b[4], rtol=1e-12, atol=0)
            and np.isclose(a[5], b[5], rtol=1e-9, atol=1e-12)
        )
        if not same:
            tally.differing.append(f"{label}: order {k}: engine {a} reference {b}")
    off = ~np.isclose(result.equity["equity"].to_numpy(), np.asarray(equity), rtol=1e-9, atol=0)
    tally.differing += [f"{label}: equity at bar {i}" for i in np.flatnonzero(off)]


@pytest.mark.parametrize("name", list(GRIDS))
def test_engine_equals_reference_loop_and_sweep_over_a_grid(name: str) -> None:
    strategy, grid = GRIDS[name]
    tally = Tally()
    for seed in SEEDS:
        bars = _bars(seed)
        one = bars.filter(pl.col("symbol") == SWEPT_SYMBOL)
        for cost_name, costs in COSTS.items():
            for short in (False, True):
                params = [strategy.params(**values, allow_short=short) for values in grid]
                for i, p in enumerate(params):
                    _compare(tally, f"seed {seed} {cost_name} short={short} {grid[i]}", bars, strategy, p, costs, short)
                swept = bars if strategy.cross_sectional else one  # a ranking sweeps the universe
                config = BacktestConfig(init_cash=100_000, allow_short=short, **costs)
                table = sweep(swept, strategy, params, config)
                for row, p in zip(table.iter_rows(named=True), params, strict=True):
                    result = run_backtest(swept, strategy, p, config)
                    tally.sweep_rows += 1
                    if not (
                        row["orders"] == result.orders.height
                        and np.isclose(row["final_equity"], result.equity["equity"][-1], rtol=1e-9, atol=0)
                        and np.isclose(row["max_drawdown"], result.metrics["max_drawdown"], rtol=1e-9, atol=1e-12)
                    ):
                        tally.differing.append(f"sweep seed {seed} {cost_name} short={short} {p}: {row} vs engine")
    print(
        f"\n{name}: {tally.combinations} combinations, {tally.bars} bars, {tally.rows} rows compared, "
        f"{len(tally.differing)} differing; sweep = engine on {tally.sweep_rows} combinations; entries {tally.stats}"
    )
    assert tally.differing == [], tally.differing[:5]
    # The grid must exercise what it claims: trades, entries the free cash cut, entries with no shares.
    assert tally.rows > tally.bars + 20 * tally.combinations
    assert tally.stats["capped"] > 0 and tally.stats["zero"] > 0, tally.stats
