"""Several symbols, one cash balance: hand-made bars where the engine's rule shows, checked in the
engine and the reference loop with the shares worked out by hand (README: an entry never commits
more than the cash there is; strategies/entries.py).

Each case once failed: signals acting on a position that never filled, a short sized on equity
already spent on a long, a rotation's entry going before the exit that pays for it, and a bar valued
at a bracket's stop price before the stop was reached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from strategies.base import SIGNAL_COLUMNS, Strategy, StrategyParams
from tests.backtests.reference import reference_backtest


class MultiScriptParams(StrategyParams):
    # symbol -> one letter per bar: L enter long, S enter short, X exit either side, . nothing
    scripts: dict[str, str]
    sizes: dict[str, float] = {}  # symbol -> the entries' size (default 1)
    levels: dict[str, tuple[float, float, float]] = {}  # symbol -> (stop, target1, target2) of its entries


def _multi_scripted(bars: pl.DataFrame, p: MultiScriptParams) -> pl.DataFrame:
    frames = []
    for (symbol,), rows in bars.group_by("symbol", maintain_order=True):
        codes = list(p.scripts.get(str(symbol), "").ljust(rows.height, "."))
        stop, t1, t2 = p.levels.get(str(symbol), (None, None, None))
        frames.append(
            rows.with_columns(
                pl.Series("entry_long", [c == "L" for c in codes]),
                pl.Series("exit_long", [c == "X" for c in codes]),
                pl.Series("entry_short", [c == "S" for c in codes]),
                pl.Series("exit_short", [c == "X" for c in codes]),
                pl.lit(p.sizes.get(str(symbol), 1.0)).alias("size"),
                pl.lit(stop, pl.Float64).alias("stop"),
                pl.lit(t1, pl.Float64).alias("target1"),
                pl.lit(t2, pl.Float64).alias("target2"),
            )
        )
    return pl.concat(frames).select([*bars.columns, *SIGNAL_COLUMNS])


MULTI = Strategy(name="multi_scripted", params_model=MultiScriptParams, compute=_multi_scripted, lookback=lambda p: 1)


def _bars(prices: dict[str, list[float]], lows: dict[str, list[float]] | None = None) -> pl.DataFrame:
    """Flat bars (open = high = low = close) per symbol, with optional lows."""
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    frames = []
    for symbol, opens in prices.items():
        low = (lows or {}).get(symbol, opens)
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "timeframe": "1d",
                    "ts": [start + timedelta(days=i) for i in range(len(opens))],
                    "open": opens,
                    "high": opens,
                    "low": low,
                    "close": opens,
                    "volume": 1000.0,
                }
            )
        )
    return pl.concat(frames)


def _orders(bars: pl.DataFrame, p: MultiScriptParams, config: BacktestConfig) -> list[tuple[int, str, str, float]]:
    """(bar index, symbol, side, shares) from the engine, checked equal to the reference loop's."""
    result = run_backtest(bars, MULTI, p, config)
    costs = config.model_dump(include={"fees_bps", "fee_per_share", "slippage_bps", "fractional", "allow_short", "brackets"})
    equity, fills = reference_backtest(MULTI.signals(bars, p), init_cash=config.init_cash, **costs)
    index = {ts: i for i, ts in enumerate(result.equity["ts"].to_list())}
    got = [(index[ts], s, side, size) for ts, s, side, size in result.orders.select("ts", "symbol", "side", "size").rows()]
    want = [(index[f.ts], f.symbol, f.side, f.size) for f in fills]
    assert [o[:3] for o in sorted(got)] == [o[:3] for o in sorted(want)]
    np.testing.assert_allclose([o[3] for o in sorted(got)], [o[3] for o in sorted(want)], rtol=1e-12)
    np.testing.assert_allclose(result.equity["equity"].to_numpy(), equity, rtol=1e-12)
    assert result.equity["cash"].to_numpy().min() >= 0
    return sorted(got)


FLAT = {"AAA": [100.0] * 7, "BBB": [100.0] * 7}


def test_an_entry_that_got_no_shares_leaves_the_symbol_free_to_enter_again() -> None:
    """AAA takes all the cash; BBB's entry on the same bar gets 0 shares, so BBB is flat: its next
    entry signal, once AAA has sold, buys. (Acting on the side the signals asked for, BBB was 'long'
    and its second entry was ignored.)"""
    p = MultiScriptParams(scripts={"AAA": "L.X...", "BBB": "L..L.."})
    orders = _orders(_bars(FLAT), p, BacktestConfig(init_cash=100_000))
    assert orders == [(1, "AAA", "buy", 1000.0), (3, "AAA", "sell", 1000.0), (4, "BBB", "buy", 1000.0)]


def test_a_short_is_capped_by_the_free_cash_not_the_equity() -> None:
    """Long AAA with half the equity: 50,000 / 100.2 -> 499 shares, cash 50,000.2. BBB's all-in short
    may commit only what is free: 99,900.2 equity less 49,900 in AAA = 50,000.2 -> 499 shares (on
    the equity alone: 99,900.2 / 100.2 -> 997, twice the cash there is)."""
    p = MultiScriptParams(scripts={"AAA": "L.....", "BBB": ".S...."}, sizes={"AAA": 0.5})
    orders = _orders(_bars(FLAT), p, BacktestConfig(init_cash=100_000, fees_bps=20.0, allow_short=True))
    assert orders == [(1, "AAA", "buy", 499.0), (2, "BBB", "sell", 499.0)]


@pytest.mark.parametrize(
    ("scripts", "expected"),
    [
        # Short AAA all in, then cover AAA and short BBB on one bar: the cover frees the margin.
        ({"AAA": "S.X...", "BBB": "..S..."}, [(1, "AAA", "sell", 1000.0), (3, "AAA", "buy", 1000.0), (3, "BBB", "sell", 1000.0)]),
        # Short AAA all in, then cover AAA and buy BBB with half: the cover goes first though the
        # entry trades less.
        ({"AAA": "S.X...", "BBB": "..L..."}, [(1, "AAA", "sell", 1000.0), (3, "AAA", "buy", 1000.0), (3, "BBB", "buy", 500.0)]),
        # Long AAA with half, then sell AAA and short BBB all in: the sale goes first though the short
        # is larger (short first: 50,000 free, 500 shares).
        ({"AAA": "L.X...", "BBB": "..S..."}, [(1, "AAA", "buy", 500.0), (3, "AAA", "sell", 500.0), (3, "BBB", "sell", 1000.0)]),
    ],
    ids=["short-to-short", "short-to-long-half", "long-to-short"],
)
def test_a_rotation_on_one_bar_pays_its_entry_with_its_exit(scripts: dict[str, str], expected: list[tuple[int, str, str, float]]) -> None:
    sizes = {"BBB": 0.5} if scripts["BBB"] == "..L..." else {"AAA": 0.5} if scripts["AAA"] == "L.X..." else {}
    p = MultiScriptParams(scripts=scripts, sizes=sizes)
    assert _orders(_bars(FLAT), p, BacktestConfig(init_cash=100_000, allow_short=True)) == expected


def test_a_bars_sales_pay_for_its_covers() -> None:
    """Long 10 BBB at 1,000 (size 0.1) and short 500 AAA at 100 (half of the 100,000; cash 140,000).
    AAA climbs to 290 and both exit on one bar: the BBB sale (10,000) goes first, so the cover
    (145,000) is paid in full; the other way round the cash covered only 482 shares."""
    prices = {"AAA": [100.0, 100.0, 100.0, 100.0, 290.0, 290.0], "BBB": [1000.0] * 6}
    p = MultiScriptParams(scripts={"AAA": ".S.X..", "BBB": "L..X.."}, sizes={"AAA": 0.5, "BBB": 0.1})
    orders = _orders(_bars(prices), p, BacktestConfig(init_cash=100_000, allow_short=True))
    assert orders == [(1, "BBB", "buy", 10.0), (2, "AAA", "sell", 500.0), (4, "AAA", "buy", 500.0), (4, "BBB", "sell", 10.0)]


def test_entries_competing_for_cash_take_it_in_order() -> None:
    """Three entries of 0.5 on one bar: AAA and BBB take 500 shares each, CCC what is left: none."""
    prices = {s: [100.0] * 5 for s in ("AAA", "BBB", "CCC")}
    p = MultiScriptParams(scripts={"AAA": "L", "BBB": "L", "CCC": "L"}, sizes=dict.fromkeys(("AAA", "BBB", "CCC"), 0.5))
    assert _orders(_bars(prices), p, BacktestConfig(init_cash=100_000)) == [(1, "AAA", "buy", 500.0), (1, "BBB", "buy", 500.0)]


def test_a_bar_whose_stop_fills_is_valued_at_the_open() -> None:
    """AAA (500 shares at 100, stop 90) opens at 100 and trades down to 80 on bar 3: stopped out at
    90. BBB's entry of 0.5 fills at that bar's open, when AAA is worth 100 a share: 0.5 x 100,000 ->
    500 shares (valued at the stop price, unknown at the open, it was 0.5 x 95,000 -> 475)."""
    bars = _bars({"AAA": [100.0] * 6, "BBB": [100.0] * 6}, lows={"AAA": [100.0, 100.0, 100.0, 80.0, 100.0, 100.0]})
    p = MultiScriptParams(scripts={"AAA": "L.....", "BBB": "..L..."}, sizes={"AAA": 0.5, "BBB": 0.5}, levels={"AAA": (90.0, 200.0, 300.0)})
    orders = _orders(bars, p, BacktestConfig(init_cash=100_000))
    assert orders == [(1, "AAA", "buy", 500.0), (3, "AAA", "sell", 500.0), (3, "BBB", "buy", 500.0)]
