"""ATR-scaled slippage by hand: a fill at bar t+1 pays the ATR known at the decision bar t.

Bars: open = close = 100, high 101, low 99, so every true range is 2 and ATR(14) is 2 (2 % of the
close) from bar 13 on. With `slippage_atr` 0.5 a fill pays 0.5 x 2 % = 1 % on top of `slippage_bps`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from backtests.engine import BacktestConfig, run_backtest
from strategies.base import SIGNAL_COLUMNS, Strategy, StrategyParams

N = 24
ENTRY_BAR = 15  # signal; the buy fills at bar 16's open
EXIT_BAR = 18  # signal; the sell fills at bar 19's open


class _Params(StrategyParams):
    pass


def _scripted(bars: pl.DataFrame, entry_bar: int = ENTRY_BAR) -> pl.DataFrame:
    i = pl.int_range(pl.len())
    return bars.with_columns(
        (i == entry_bar).alias("entry_long"),
        (i == EXIT_BAR).alias("exit_long"),
        pl.lit(False).alias("entry_short"),
        pl.lit(False).alias("exit_short"),
        pl.lit(0.5).alias("size"),
        *(pl.lit(None, pl.Float64).alias(c) for c in ("stop", "target1", "target2")),
    ).select([*bars.columns, *SIGNAL_COLUMNS])


SCRIPTED = Strategy(name="scripted", params_model=_Params, compute=lambda b, p: _scripted(b), lookback=lambda p: 1)
EARLY = Strategy(name="early", params_model=_Params, compute=lambda b, p: _scripted(b, entry_bar=5), lookback=lambda p: 1)


def _bars(ranges: dict[int, tuple[float, float]] | None = None) -> pl.DataFrame:
    """Flat bars; `ranges` replaces (high, low) on the given bars."""
    ranges = ranges or {}
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": "AAA",
            "timeframe": "1d",
            "ts": [start + timedelta(days=k) for k in range(N)],
            "open": 100.0,
            "high": [ranges.get(k, (101.0, 99.0))[0] for k in range(N)],
            "low": [ranges.get(k, (101.0, 99.0))[1] for k in range(N)],
            "close": 100.0,
            "volume": 1000.0,
        }
    )


def _fills(bars: pl.DataFrame, strategy: Strategy[_Params] = SCRIPTED, **config: float) -> list[tuple[str, float]]:
    result = run_backtest(bars, strategy, _Params(), BacktestConfig(init_cash=10_000, **config))  # type: ignore[arg-type]
    return [(side, round(price, 10)) for side, price in result.orders.select("side", "price").rows()]


def test_atr_slippage_by_hand() -> None:
    # 1 % from the ATR, plus 2 bps: buys pay 100 x 1.0102, sells get 100 x 0.9898.
    assert _fills(_bars(), slippage_atr=0.5, slippage_bps=2.0) == [("buy", 101.02), ("sell", 98.98)]
    assert _fills(_bars(), slippage_atr=0.0) == [("buy", 100.0), ("sell", 100.0)]


def test_atr_slippage_uses_the_decision_bar_not_the_fill_bar() -> None:
    # A wild range on a fill bar is not known when its order is sent: the sell filled on bar 19
    # pays what the ATR said at bar 18.
    assert _fills(_bars({EXIT_BAR + 1: (120.0, 80.0)}), slippage_atr=0.5) == [("buy", 101.0), ("sell", 99.0)]
    # The buy filled on bar 16 likewise; bar 16's true range of 40 is known by the exit's decision
    # bar 18: ATR = (13 x 2 + 40) / 14, so the sell pays 0.5 x 66 / 14 % of 100.
    assert _fills(_bars({ENTRY_BAR + 1: (120.0, 80.0)}), slippage_atr=0.5) == [("buy", 101.0), ("sell", round(100 - 0.5 * 66 / 14, 10))]
    # A range of 16 on the entry's decision bar 15 is known: ATR = (13 x 2 + 16) / 14 = 3 at bars
    # 15 to 18, so both the buy and the sell pay 1.5 %.
    assert _fills(_bars({ENTRY_BAR: (108.0, 92.0)}), slippage_atr=0.5) == [("buy", 101.5), ("sell", 98.5)]


def test_no_atr_slippage_before_the_atr_exists() -> None:
    # Signal on bar 5: ATR(14) is not defined yet, so only the basis points apply.
    fills = _fills(_bars(), EARLY, slippage_atr=0.5, slippage_bps=10.0)
    assert fills[0] == ("buy", pytest.approx(100.1))
