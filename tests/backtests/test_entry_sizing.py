"""An entry never commits more than the cash there is (strategies/entries.py), in the engine, the
reference loop and the compiled sweep alike: hand-made paths where the naive size (the equity before
the closing fee, the entry fee on top) is one share more than the rule allows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from backtests.sweep import sweep
from lake.sources.synthetic import SyntheticSource
from strategies.base import SIGNAL_COLUMNS, Strategy, StrategyParams, no_levels
from strategies.builtin import SMA_CROSS
from strategies.entries import after_closing, entry_shares
from tests.backtests.reference import Fill, reference_backtest


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((10_000.0, 1.0, 100.0, 0.002, 0.0, True), 99.0),  # 10,000 / 100.2 = 99.80
        ((10_000.0, 1.0, 100.0, 0.002, 0.0, False), 10_000 / 100.2),
        ((10_000.0, 0.5, 100.0, 0.002, 0.0, True), 49.0),  # 5,000 / 100.2 = 49.90
        ((10_000.0, 1.0, 99.0, 0.0, 1.0, True), 100.0),  # a per-share fee: 10,000 / (99 + 1)
        ((10_000.0, 1.0, 99.0, 0.0, 1.01, True), 99.0),
        ((0.0, 1.0, 100.0, 0.002, 0.0, True), 0.0),
        ((-5.0, 1.0, 100.0, 0.002, 0.0, False), 0.0),
        ((0.5, 1.0, 100.0, 0.0, 0.0, False), 0.005),  # fractional: less than a dollar still buys
        ((50.0, 1.0, 100.0, 0.0, 0.0, False), 0.5),
        ((2e-6, 1.0, 100.0, 0.0, 0.0, False), 2e-8),  # at least MIN_SHARES (1e-8)
        ((5e-7, 1.0, 100.0, 0.0, 0.0, False), 0.0),  # 5e-9 shares: float dust, no entry
    ],
)
def test_entry_shares(args: tuple[float, float, float, float, float, bool], expected: float) -> None:
    assert entry_shares(*args) == pytest.approx(expected, rel=1e-15)


def test_after_closing_pays_the_closing_fee_and_slippage_first() -> None:
    # Long 99 marked at 250, sold at 249.75 (10 bps slippage) with 20 bps fee, to go short.
    assert after_closing(24_830.2, 99.0, -1, 249.75, 250.0, 0.002, 0.0) == pytest.approx(24_830.2 - 99 * 0.25 - 99 * 249.75 * 0.002)
    # Short 49 bought back at 96 with a 1-cent per-share fee, to go long.
    assert after_closing(10_186.2, -49.0, 1, 96.0, 96.0, 0.0, 0.01) == pytest.approx(10_186.2 - 0.49)
    assert after_closing(10_000.0, 0.0, -1, 100.0, 100.0, 0.002, 0.0) == 10_000.0  # flat: nothing to close
    assert after_closing(10_000.0, 5.0, 1, 100.0, 100.0, 0.002, 0.0) == 10_000.0  # same side: nothing to close
    # A fractional half share held short is closed too (its fee paid), however small.
    assert after_closing(10_000.0, -0.5, 1, 100.0, 100.0, 0.002, 0.0) == pytest.approx(10_000.0 - 0.5 * 100 * 0.002, rel=1e-15)


class ScriptParams(StrategyParams):
    script: str  # one letter per bar: L enter long, S enter short, X exit either side, . nothing
    size: float = 1.0


def _scripted(bars: pl.DataFrame, p: ScriptParams) -> pl.DataFrame:
    codes = list(p.script.ljust(bars.height, "."))
    return bars.with_columns(
        pl.Series("entry_long", [c == "L" for c in codes]),
        pl.Series("exit_long", [c == "X" for c in codes]),
        pl.Series("entry_short", [c == "S" for c in codes]),
        pl.Series("exit_short", [c == "X" for c in codes]),
        pl.lit(p.size).alias("size"),
        *no_levels(),
    ).select([*bars.columns, *SIGNAL_COLUMNS])


SCRIPTED = Strategy(name="scripted", params_model=ScriptParams, compute=_scripted, lookback=lambda p: 1)


def _bars(opens: list[float]) -> pl.DataFrame:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": "AAA",
            "timeframe": "1d",
            "ts": [start + timedelta(days=i) for i in range(len(opens))],
            "open": opens,
            "high": opens,
            "low": opens,
            "close": opens,
            "volume": 1000.0,
        }
    )


def _cash_path(fills: list[Fill], init_cash: float) -> list[float]:
    cash, path = init_cash, []
    for f in fills:
        cash += (-1 if f.side == "buy" else 1) * f.size * f.price - f.fees
        path.append(cash)
    return path


# (script, opens, size, costs, expected orders (side, shares), the naive entry one share larger)
CASES: list[tuple[str, list[float], float, dict[str, Any], list[tuple[str, float]]]] = [
    # Long 99 at 100 (10,000 / 100.2), cash 80.2. At 250: closing leaves 80.2 + 99 x 250 x 0.998 =
    # 24,780.7 for 24,780.7 / (250 x 1.002) = 98.9 -> short 98 (naive: 24,830.2 / 250 -> 99).
    (".LS..", [100, 100, 100, 250, 250], 1.0, {"fees_bps": 20.0}, [("buy", 99.0), ("sell", 99.0 + 98.0)]),
    # Short 49 at 100 (5,000 / 100.2 = 49.9; naive 50), cash 14,890.2. At 96: covering leaves
    # 14,890.2 - 49 x 96 x 1.002 = 10,176.79; half of it / (96 x 1.002) = 52.9 -> long 52 (naive 53).
    (".SL..", [100, 100, 100, 96, 96], 0.5, {"fees_bps": 20.0}, [("sell", 49.0), ("buy", 49.0 + 52.0)]),
    # Short from flat with 10 bps slippage: 10,000 / (99.9 x 1.002) = 99.9 -> 99 (naive 100).
    (".S...", [100, 100, 100, 100, 100], 1.0, {"fees_bps": 20.0, "slippage_bps": 10.0}, [("sell", 99.0)]),
    # Long 99 at 100.1 (slipped), cash 80.0998 - then at 250: sold at 249.75, 80.0998 + 99 x 249.75
    # x 0.998 = 24,755.86 / (249.75 x 1.002) = 98.93 -> short 98, with slippage on both legs.
    (".LS..", [100, 100, 100, 250, 250], 1.0, {"fees_bps": 20.0, "slippage_bps": 10.0}, [("buy", 99.0), ("sell", 99.0 + 98.0)]),
    # A per-share fee of 50 cents: long 99 at 100 (10,000 / 100.5 = 99.5), cash 50.5; at 250 closing
    # leaves 50.5 + 99 x 249.5 = 24,751 for 24,751 / 250.5 = 98.8 -> short 98 (naive: 24,800.5 / 250 -> 99).
    (".LS..", [100, 100, 100, 250, 250], 1.0, {"fee_per_share": 0.5}, [("buy", 99.0), ("sell", 99.0 + 98.0)]),
    # Fractional: the unfloored sizes, cash to the cent.
    (
        ".LS..",
        [100, 100, 100, 250, 250],
        1.0,
        {"fees_bps": 20.0, "fractional": True},
        [("buy", 10_000 / 100.2), ("sell", 10_000 / 100.2 + 10_000 / 100.2 * 250 * 0.998 / 250.5)],
    ),
    # Long, short, long again: short 98 as above leaves cash 49,231.7; at 200 covering leaves
    # 49,231.7 - 98 x 200.4 = 29,592.5 for 29,592.5 / 200.4 = 147.7 -> long 147.
    (".LSL.", [100, 100, 100, 250, 200], 1.0, {"fees_bps": 20.0}, [("buy", 99.0), ("sell", 197.0), ("buy", 98.0 + 147.0)]),
]


@pytest.mark.parametrize(
    ("script", "opens", "size", "costs", "expected"),
    CASES,
    ids=["long-to-short", "short-to-long-half", "short-from-flat-slippage", "long-to-short-slippage", "per-share-fee", "fractional", "two-reversals"],
)
def test_reversal_and_short_entry_sizes(
    script: str, opens: list[float], size: float, costs: dict[str, Any], expected: list[tuple[str, float]]
) -> None:
    bars = _bars([float(o) for o in opens])
    p = ScriptParams(script=script, size=size)
    config = BacktestConfig(init_cash=10_000, allow_short=True, **costs)
    result = run_backtest(bars, SCRIPTED, p, config)
    got = result.orders.select("side", "size").rows()
    assert [s for s, _ in got] == [s for s, _ in expected]
    np.testing.assert_allclose([q for _, q in got], [q for _, q in expected], rtol=1e-12)
    assert result.equity["cash"].to_numpy().min() >= 0

    equity, fills = reference_backtest(SCRIPTED.signals(bars, p), init_cash=10_000, allow_short=True, **costs)
    assert [f.side for f in fills] == [s for s, _ in got]
    np.testing.assert_allclose([f.size for f in fills], [q for _, q in got], rtol=1e-12)
    assert min(_cash_path(fills, 10_000)) >= 0
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-12)

    table = sweep(bars, SCRIPTED, [p], config)  # the compiled signals kernel
    assert table["orders"][0] == len(got)
    assert table["final_equity"][0] == pytest.approx(result.equity["equity"][-1], rel=1e-12)


def test_the_naive_size_would_overdraw() -> None:
    """The first case's short of 99 (the equity before the closing fee, the entry fee on top) would
    commit more than the equity left after closing the long."""
    left = 80.2 + 99 * 250 * 0.998
    assert 99 * 250 * 1.002 > left >= 98 * 250 * 1.002


def test_nine_years_long_short_all_in_engine_equals_reference_and_sweep() -> None:
    """The finding's setting: 9 years of daily bars, sma_cross long-short all-in, 0.2 % per fill,
    next open, whole shares."""
    bars = SyntheticSource(seed=7).fetch(["AAPL"], "1d", datetime(2015, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    config = BacktestConfig(init_cash=100_000, fees_bps=20.0, allow_short=True)
    p = SMA_CROSS.params(fast=10, slow=30, allow_short=True)
    result = run_backtest(bars, SMA_CROSS, p, config)
    equity, fills = reference_backtest(SMA_CROSS.signals(bars, p), init_cash=100_000, fees_bps=20.0, allow_short=True)
    assert bars.height > 2_000 and len(fills) == result.orders.height > 50
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-12)
    assert result.equity["cash"].to_numpy().min() >= 0 and min(_cash_path(fills, 100_000)) >= 0
    table = sweep(bars, SMA_CROSS, [p], config)
    assert table["final_equity"][0] == pytest.approx(result.equity["equity"][-1], rel=1e-12)
    assert table["orders"][0] == result.orders.height


def test_every_entry_fits_the_cash_after_its_closing_trade() -> None:
    """Replays the engine's orders on a long-short run with fees and slippage: no entry's shares,
    with their fee, cost more than the equity left after the closing part of the same order."""
    bars = SyntheticSource(seed=7).fetch(["AAPL"], "1d", datetime(2019, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    config = BacktestConfig(init_cash=100_000, fees_bps=20.0, slippage_bps=5.0, allow_short=True)
    result = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(fast=5, slow=20, allow_short=True), config)
    cash, position, entries = 100_000.0, 0.0, 0
    for side, size, price, fees in result.orders.select("side", "size", "price", "fees").rows():
        sign = 1 if side == "buy" else -1
        closing = min(size, max(-sign * position, 0.0))
        fee_rate = fees / (size * price)
        cash_after_close = cash - sign * closing * price - closing * price * fee_rate
        opened = size - closing
        if opened > 0:
            entries += 1
            assert opened * price * (1 + fee_rate) <= cash_after_close  # the closing trade leaves it flat
            assert (opened + 1) * price * (1 + fee_rate) > cash_after_close  # all in: one more would not fit
        cash -= sign * size * price + fees
        position += sign * size
        assert math.isfinite(cash)
    assert entries > 20
