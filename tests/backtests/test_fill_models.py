"""Every fill model the engine offers (`BacktestConfig.fill`: the next bar's open or its close)
against the plain reference loop (`tests/backtests/reference.py`, `fill=`): for each built-in
strategy (brackets and cross-sectional sizing included), with costs, whole and fractional shares,
long-only and long-short, on four symbols sharing one cash balance, the same orders (bar, symbol,
side; shares 1e-9, price 1e-12, fees 1e-9) and the same equity at every bar (1e-9)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, get_args

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.base import Strategy
from strategies.builtin import DONCHIAN_BREAKOUT, MOMENTUM, RSI_REVERSION, SMA_CROSS
from tests.backtests.reference import reference_backtest

FILLS: tuple[str, ...] = get_args(BacktestConfig.model_fields["fill"].annotation)
SYMBOLS = ["AAPL", "JPM", "MSFT", "XOM"]
COSTS: dict[str, dict[str, Any]] = {
    "fees_per_share": {"fees_bps": 5.0, "fee_per_share": 0.005},
    "fees_slippage_fractional": {"fees_bps": 2.0, "slippage_bps": 10.0, "fractional": True},
}
CASES: dict[str, tuple[Strategy[Any], dict[str, Any]]] = {
    "sma_cross all in": (SMA_CROSS, {"fast": 3, "slow": 12}),
    "sma_cross volatility sizing": (SMA_CROSS, {"fast": 5, "slow": 20, "sizing": "volatility", "vol_target": 0.02}),
    "rsi_reversion": (RSI_REVERSION, {"period": 5, "lower": 35.0, "upper": 65.0, "fraction": 0.6}),
    "donchian_breakout (brackets)": (DONCHIAN_BREAKOUT, {"entry_window": 10, "exit_window": 5, "target1_atr": 1.0, "stop_atr": 1.5}),
    "cross_sectional_momentum": (MOMENTUM, {"lookback": 10, "top_k": 2, "vol_window": 10, "vol_target": 0.3}),
}


@cache
def _bars() -> pl.DataFrame:
    return SyntheticSource(seed=12).fetch(SYMBOLS, "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC))


def test_the_engine_offers_these_fill_models() -> None:
    assert FILLS == ("next_open", "next_close")


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("case", list(CASES))
def test_engine_equals_reference_loop_for_each_fill_model(case: str, fill: str) -> None:
    strategy, raw = CASES[case]
    bars = _bars()
    differing: list[str] = []
    orders = 0
    for cost_name, costs in COSTS.items():
        for short in (False, True):
            p = strategy.params(**raw, allow_short=short)
            result = run_backtest(bars, strategy, p, BacktestConfig(init_cash=100_000, allow_short=short, fill=fill, **costs))  # type: ignore[arg-type]
            equity, fills = reference_backtest(strategy.signals(bars, p), init_cash=100_000, allow_short=short, fill=fill, **costs)
            got = sorted(result.orders.rows(), key=lambda o: (o[0], o[1], o[2]))
            want = sorted(((f.ts, f.symbol, f.side, f.size, f.price, f.fees) for f in fills), key=lambda o: (o[0], o[1], o[2]))
            orders += len(got)
            label = f"{cost_name} short={short}"
            if len(got) != len(want):
                differing.append(f"{label}: {len(got)} orders, reference {len(want)}")
            for a, b in zip(got, want, strict=False):
                if not (
                    a[:3] == b[:3]
                    and np.isclose(a[3], b[3], rtol=1e-9, atol=0)
                    and np.isclose(a[4], b[4], rtol=1e-12, atol=0)
                    and np.isclose(a[5], b[5], rtol=1e-9, atol=1e-12)
                ):
                    differing.append(f"{label}: engine {a} reference {b}")
            off = ~np.isclose(result.equity["equity"].to_numpy(), np.asarray(equity), rtol=1e-9, atol=0)
            differing += [f"{label}: equity at bar {i}" for i in np.flatnonzero(off)]
    assert differing == [], differing[:5]
    assert orders > 40


def test_next_close_fills_signal_orders_at_the_next_bars_close() -> None:
    bars = _bars()
    p = SMA_CROSS.params(fast=3, slow=12)
    result = run_backtest(bars, SMA_CROSS, p, BacktestConfig(init_cash=100_000, fill="next_close"))
    closes = bars.select("ts", "symbol", "close")
    joined = result.orders.join(closes, on=["ts", "symbol"], how="left")
    assert joined.height > 10
    np.testing.assert_array_equal(joined["price"].to_numpy(), joined["close"].to_numpy())
    opened = run_backtest(bars, SMA_CROSS, p, BacktestConfig(init_cash=100_000, fill="next_open"))
    assert opened.orders["price"].to_list() != result.orders["price"].to_list()
