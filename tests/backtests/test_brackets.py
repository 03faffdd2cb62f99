"""Bracket exits: the shared rule, the engine on hand-made bars, and the sweep agreeing with the engine."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from backtests.sweep import sweep
from strategies.base import SIGNAL_COLUMNS, Strategy, StrategyParams
from strategies.brackets import EXIT_ALL, EXIT_HALF, FLAT, FULL, HALF_LEFT, NO_EXIT, bracket_step, half_of
from strategies.builtin import DONCHIAN_BREAKOUT
from tests.backtests.reference import reference_backtest

NAN = math.nan


@pytest.mark.parametrize(
    ("phase", "bar", "expected"),
    [
        (FULL, (100, 101, 99), (FULL, NO_EXIT, NAN)),  # inside the bracket
        (FULL, (100, 101, 94), (FLAT, EXIT_ALL, 95.0)),  # stop touched
        (FULL, (90, 92, 88), (FLAT, EXIT_ALL, 90.0)),  # gapped below the stop: the open
        (FULL, (100, 106, 99), (HALF_LEFT, EXIT_HALF, 105.0)),  # target 1: half out
        (FULL, (107, 108, 106), (HALF_LEFT, EXIT_HALF, 107.0)),  # gapped above target 1
        (FULL, (100, 111, 94), (FLAT, EXIT_ALL, 95.0)),  # stop and targets in one bar: stop first
        (FULL, (100, 111, 99), (HALF_LEFT, EXIT_HALF, 105.0)),  # one exit per bar: target 2 waits
        (HALF_LEFT, (101, 102, 99.5), (FLAT, EXIT_ALL, 100.0)),  # the stop moved to breakeven
        (HALF_LEFT, (101, 110, 100.5), (FLAT, EXIT_ALL, 110.0)),  # target 2
    ],
)
def test_bracket_step(phase: int, bar: tuple[float, float, float], expected: tuple[int, int, float]) -> None:
    got = bracket_step(phase, 100.0, 95.0, 105.0, 110.0, *bar)
    assert got[:2] == expected[:2]
    assert (math.isnan(got[2]) and math.isnan(expected[2])) or got[2] == expected[2]


@pytest.mark.parametrize(
    ("phase", "bar", "expected"),
    [
        (FULL, (100, 101, 99), (FULL, NO_EXIT, NAN)),
        (FULL, (100, 106, 99), (FLAT, EXIT_ALL, 105.0)),  # stop above, touched
        (FULL, (110, 112, 108), (FLAT, EXIT_ALL, 110.0)),  # gapped above the stop: the open
        (FULL, (100, 101, 94), (HALF_LEFT, EXIT_HALF, 95.0)),  # target 1 below: half covered
        (FULL, (93, 94, 92), (HALF_LEFT, EXIT_HALF, 93.0)),  # gapped below target 1
        (FULL, (100, 106, 89), (FLAT, EXIT_ALL, 105.0)),  # both in one bar: stop first
        (HALF_LEFT, (99, 100.5, 98), (FLAT, EXIT_ALL, 100.0)),  # breakeven stop
        (HALF_LEFT, (99, 99.5, 90), (FLAT, EXIT_ALL, 90.0)),  # target 2
    ],
)
def test_short_bracket_is_the_mirror(phase: int, bar: tuple[float, float, float], expected: tuple[int, int, float]) -> None:
    got = bracket_step(phase, 100.0, 105.0, 95.0, 90.0, *bar, side=-1)
    assert got[:2] == expected[:2]
    assert (math.isnan(got[2]) and math.isnan(expected[2])) or got[2] == expected[2]


@pytest.mark.parametrize(
    ("side", "phase", "bar", "expected"),
    [
        # A level is touched when the bar's range reaches it: low <= stop, high >= target.
        (1, FULL, (100, 101, 95), (FLAT, EXIT_ALL, 95.0)),  # low exactly at the stop
        (1, FULL, (100, 105, 99), (HALF_LEFT, EXIT_HALF, 105.0)),  # high exactly at target 1
        (1, HALF_LEFT, (101, 102, 100), (FLAT, EXIT_ALL, 100.0)),  # low exactly at breakeven
        (1, HALF_LEFT, (101, 110, 100.5), (FLAT, EXIT_ALL, 110.0)),  # high exactly at target 2
        (1, FULL, (95, 96, 94), (FLAT, EXIT_ALL, 95.0)),  # opens exactly at the stop
        (1, FULL, (105, 106, 104), (HALF_LEFT, EXIT_HALF, 105.0)),  # opens exactly at target 1
        (1, FULL, (100, 104.99, 95.01), (FULL, NO_EXIT, NAN)),  # a cent inside both
        (-1, FULL, (100, 105, 99), (FLAT, EXIT_ALL, 105.0)),  # short: high exactly at the stop
        (-1, FULL, (100, 101, 95), (HALF_LEFT, EXIT_HALF, 95.0)),  # short: low exactly at target 1
        (-1, HALF_LEFT, (99, 100, 98), (FLAT, EXIT_ALL, 100.0)),  # short: high exactly at breakeven
        (-1, HALF_LEFT, (99, 99.5, 90), (FLAT, EXIT_ALL, 90.0)),  # short: low exactly at target 2
        (-1, FULL, (100, 104.99, 95.01), (FULL, NO_EXIT, NAN)),
    ],
)
def test_an_exact_touch_triggers_the_level(side: int, phase: int, bar: tuple[float, float, float], expected: tuple[int, int, float]) -> None:
    levels = (95.0, 105.0, 110.0) if side > 0 else (105.0, 95.0, 90.0)
    got = bracket_step(phase, 100.0, *levels, *bar, side=side)
    assert got[:2] == expected[:2]
    assert (math.isnan(got[2]) and math.isnan(expected[2])) or got[2] == expected[2]


def test_an_exact_touch_of_target2_without_target1_exits_all() -> None:
    assert bracket_step(FULL, 100.0, 95.0, NAN, 110.0, 100, 110, 99) == (FLAT, EXIT_ALL, 110.0)
    assert bracket_step(FULL, 100.0, 95.0, NAN, 110.0, 100, 109.99, 99)[:2] == (FULL, NO_EXIT)
    assert bracket_step(FULL, 100.0, 105.0, NAN, 90.0, 100, 101, 90, side=-1) == (FLAT, EXIT_ALL, 90.0)


def test_engine_exact_touches_of_the_levels() -> None:
    """The compiled rule in the engine: a low exactly at the stop exits, a high exactly at a target fills it."""
    bars = _bars(
        [
            (100, 101, 99, 100),
            (100, 101, 99, 100),  # bar 1: signal (stop 95, targets 105 / 110)
            (100, 101, 99, 100),  # bar 2: entry at the open
            (100, 105, 99, 104),  # bar 3: high exactly 105 -> half out at 105, stop to 100
            (104, 110, 100.5, 109),  # bar 4: high exactly at target 2 -> the rest at 110
        ]
    )
    result = run_backtest(bars, SCRIPTED, _Params(), BacktestConfig(init_cash=10_000))
    assert result.orders.select("side", "size", "price").rows() == [("buy", 50.0, 100.0), ("sell", 25.0, 105.0), ("sell", 25.0, 110.0)]
    stopped = _bars([(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 95, 97), (97, 98, 96, 97)])
    result = run_backtest(stopped, SCRIPTED, _Params(), BacktestConfig(init_cash=10_000))
    assert result.orders.select("side", "size", "price").rows() == [("buy", 50.0, 100.0), ("sell", 50.0, 95.0)]


def test_missing_levels() -> None:
    assert bracket_step(FULL, 100.0, NAN, NAN, NAN, 100, 200, 1)[:2] == (FULL, NO_EXIT)
    assert bracket_step(FULL, 100.0, NAN, NAN, 110.0, 100, 111, 99) == (FLAT, EXIT_ALL, 110.0)  # no target 1: all at 2
    assert half_of(7, fractional=False) == 3 and half_of(7, fractional=True) == 3.5
    # After target 1 without a target 2: only the breakeven stop can end it.
    got = bracket_step(HALF_LEFT, 100.0, 95.0, 105.0, NAN, 101, 150, 100.5)
    assert got[:2] == (HALF_LEFT, NO_EXIT) and math.isnan(got[2])


class _Params(StrategyParams):
    pass


def _scripted(bars: pl.DataFrame, side: int = 1) -> pl.DataFrame:
    """Enters on bar 1 (long: stop 95, targets 105/110; short: the mirror 105, 95/90); nothing else."""
    first = [i == 1 for i in range(bars.height)]

    def level(distance: float, name: str) -> pl.Series:
        return pl.Series(name, [100.0 + side * distance if f else None for f in first], dtype=pl.Float64)

    return bars.with_columns(
        pl.Series("entry_long", first) if side > 0 else pl.lit(False).alias("entry_long"),
        pl.lit(False).alias("exit_long"),
        pl.Series("entry_short", first) if side < 0 else pl.lit(False).alias("entry_short"),
        pl.lit(False).alias("exit_short"),
        pl.lit(0.5).alias("size"),
        level(-5.0, "stop"),
        level(5.0, "target1"),
        level(10.0, "target2"),
    ).select([*bars.columns, *SIGNAL_COLUMNS])


SCRIPTED = Strategy(name="scripted", params_model=_Params, compute=lambda b, p: _scripted(b), lookback=lambda p: 1)


def _bars(ohlc: list[tuple[float, float, float, float]]) -> pl.DataFrame:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": "AAA",
            "timeframe": "1d",
            "ts": [start + timedelta(days=i) for i in range(len(ohlc))],
            "open": [float(b[0]) for b in ohlc],
            "high": [float(b[1]) for b in ohlc],
            "low": [float(b[2]) for b in ohlc],
            "close": [float(b[3]) for b in ohlc],
            "volume": 1000.0,
        }
    )


def test_engine_exits_half_at_target1_then_the_rest_at_breakeven() -> None:
    bars = _bars(
        [
            (100, 101, 99, 100),
            (100, 101, 99, 100),  # bar 1: signal
            (100, 106, 94, 100),  # bar 2: entry fills at the open; its own range is not checked
            (100, 106, 99, 104),  # bar 3: target 1 -> half out at 105, stop to 100
            (104, 104, 99.5, 101),  # bar 4: breakeven stop -> the rest at 100
            (101, 120, 100, 118),  # bar 5: flat, nothing
        ]
    )
    result = run_backtest(bars, SCRIPTED, _Params(), BacktestConfig(init_cash=10_000))
    orders = result.orders.select("side", "size", "price").rows()
    assert orders == [("buy", 50.0, 100.0), ("sell", 25.0, 105.0), ("sell", 25.0, 100.0)]
    assert result.equity["equity"][-1] == pytest.approx(10_000 + 25 * 5)
    plain = run_backtest(bars, SCRIPTED, _Params(), BacktestConfig(init_cash=10_000, brackets=False))
    assert plain.orders.select("side", "size").rows() == [("buy", 50.0)]  # levels ignored: still long


def test_engine_gap_through_the_stop_fills_at_the_open() -> None:
    bars = _bars([(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 99, 100), (90, 92, 88, 91)])
    result = run_backtest(bars, SCRIPTED, _Params(), BacktestConfig(init_cash=10_000, fees_bps=10))
    # Half the cash, the entry fee included: floor(5,000 / (100 x 1.001)) = 49 shares, not 50.
    assert result.orders.select("side", "size", "price").rows() == [("buy", 49.0, 100.0), ("sell", 49.0, 90.0)]
    equity, fills = reference_backtest(SCRIPTED.signals(bars, _Params()), init_cash=10_000, fees_bps=10)
    assert [(f.side, f.size, f.price) for f in fills] == [("buy", 49, 100.0), ("sell", 49, 90.0)]
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-12)


SCRIPTED_SHORT = Strategy(name="scripted_short", params_model=_Params, compute=lambda b, p: _scripted(b, side=-1), lookback=lambda p: 1)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (  # target 1 covers half at 95 and moves the stop to 100; target 2 covers the rest at 90
            [(100, 101, 96, 96), (95, 96, 94, 95), (94, 95, 89, 90)],
            [("sell", 50.0, 100.0), ("buy", 25.0, 95.0), ("buy", 25.0, 90.0)],
        ),
        (  # after target 1, the breakeven stop (above) covers the rest at 100
            [(100, 101, 99, 100), (97, 98, 94, 95), (97, 100.5, 96, 100)],
            [("sell", 50.0, 100.0), ("buy", 25.0, 95.0), ("buy", 25.0, 100.0)],
        ),
        (  # gapped above the stop: all covered at the open
            [(100, 101, 99, 100), (108, 110, 107, 109), (109, 110, 108, 109)],
            [("sell", 50.0, 100.0), ("buy", 50.0, 108.0)],
        ),
    ],
    ids=["targets", "breakeven", "gap-through-stop"],
)
def test_short_brackets_mirror_the_long_ones(path: list[tuple[float, float, float, float]], expected: list[tuple[str, float, float]]) -> None:
    # bar 1 signals; bar 2 fills the short at its open (its own range is not checked).
    bars = _bars([(100, 101, 99, 100), (100, 101, 99, 100), *path, (100, 101, 99, 100)])
    config = BacktestConfig(init_cash=10_000, allow_short=True)
    result = run_backtest(bars, SCRIPTED_SHORT, _Params(), config)
    assert result.orders.select("side", "size", "price").rows() == expected
    equity, fills = reference_backtest(SCRIPTED_SHORT.signals(bars, _Params()), init_cash=10_000, allow_short=True)
    assert [(f.side, float(f.size), f.price) for f in fills] == expected
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-12)
    plain = run_backtest(bars, SCRIPTED_SHORT, _Params(), BacktestConfig(init_cash=10_000, allow_short=True, brackets=False))
    assert plain.orders.select("side", "size").rows() == [("sell", 50.0)]  # levels ignored: still short


def _partial_exits(orders: list[tuple[str, str, float]], side: str | None = None) -> int:
    """Orders (of `side`, or any) that shrank a position without closing or flipping it: half exits."""
    position: dict[str, float] = {}
    count = 0
    for symbol, order_side, size in orders:
        before = position.get(symbol, 0.0)
        after = position[symbol] = before + (size if order_side == "buy" else -size)
        count += before * after > 0 and abs(after) < abs(before) and side in (None, order_side)
    return count


def test_long_short_donchian_brackets_both_sides_and_matches_the_reference(daily_bars: pl.DataFrame) -> None:
    p = DONCHIAN_BREAKOUT.params(entry_window=15, exit_window=8, allow_short=True)
    config = BacktestConfig(init_cash=100_000, allow_short=True, fees_bps=2.0, slippage_bps=1.0)
    result = run_backtest(daily_bars, DONCHIAN_BREAKOUT, p, config)
    equity, fills = reference_backtest(
        DONCHIAN_BREAKOUT.signals(daily_bars, p), init_cash=100_000, allow_short=True, fees_bps=2.0, slippage_bps=1.0
    )
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-9)
    assert len(fills) == result.orders.height
    # Half covers: a buy that left the symbol still short, so a short's target 1 was hit.
    assert _partial_exits([(f.symbol, f.side, f.size) for f in fills], side="buy") > 0


def test_donchian_run_uses_half_exits_and_matches_the_reference(daily_bars: pl.DataFrame) -> None:
    p = DONCHIAN_BREAKOUT.params(entry_window=15, exit_window=8)
    result = run_backtest(daily_bars, DONCHIAN_BREAKOUT, p, BacktestConfig(init_cash=100_000))
    equity, fills = reference_backtest(DONCHIAN_BREAKOUT.signals(daily_bars, p), init_cash=100_000)
    sells = result.orders.filter(pl.col("side") == "sell")
    buys = result.orders.filter(pl.col("side") == "buy")
    assert sells.height > buys.height  # some positions left in two pieces: half at target 1
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-9)
    assert len(fills) == result.orders.height


@pytest.mark.parametrize(
    "costs",
    [
        {},
        {"fees_bps": 5.0, "fee_per_share": 0.01, "slippage_bps": 3.0},
        {"fees_bps": 2.0, "fractional": True},
        {"fees_bps": 2.0, "slippage_bps": 1.0, "allow_short": True},
    ],
    ids=["free", "costs", "fractional", "long-short"],
)
def test_sweep_of_a_bracketed_strategy_equals_the_engine(daily_bars: pl.DataFrame, costs: dict[str, float]) -> None:
    """The compiled sweep loop follows the engine's bracket rules, combination by combination."""
    one = daily_bars.filter(pl.col("symbol") == "AAPL")
    shorts = bool(costs.get("allow_short", False))
    grid = [
        DONCHIAN_BREAKOUT.params(entry_window=w, exit_window=x, target1_atr=t, allow_short=shorts)
        for w in (10, 20)
        for x in (5, 10)
        for t in (1.0, 2.0)
    ]
    config = BacktestConfig(init_cash=50_000, **costs)  # type: ignore[arg-type]
    table = sweep(one, DONCHIAN_BREAKOUT, grid, config)
    half_exits = 0
    for row, p in zip(table.iter_rows(named=True), grid, strict=True):
        result = run_backtest(one, DONCHIAN_BREAKOUT, p, config)
        assert row["final_equity"] == pytest.approx(result.equity["equity"][-1], rel=1e-9)
        assert row["orders"] == result.orders.height
        half_exits += _partial_exits(result.orders.select("symbol", "side", "size").rows())
    assert half_exits > 0  # target 1 was reached: the brackets were exercised
