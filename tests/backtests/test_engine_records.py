"""The engine's order and trade tables name symbols and sides as text, also when there are none."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from backtests.engine import BacktestConfig, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS


def _bars() -> pl.DataFrame:
    return SyntheticSource(seed=11).fetch(["MSFT", "AAPL"], "1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))


def test_a_run_without_orders_has_text_columns() -> None:
    bars = _bars()
    result = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(fast=3, slow=9), BacktestConfig(timeframe="1h"), trade_from=datetime(2030, 1, 1, tzinfo=UTC))
    assert result.orders.height == 0 and result.trades.height == 0
    assert result.orders.schema["symbol"] == pl.String and result.orders.schema["side"] == pl.String
    assert result.trades.schema["symbol"] == pl.String and result.trades.schema["direction"] == pl.String


def test_records_name_their_symbol_and_side() -> None:
    result = run_backtest(_bars(), SMA_CROSS, SMA_CROSS.params(fast=3, slow=9, allow_short=True, fraction=0.4), BacktestConfig(timeframe="1h", allow_short=True))
    rec = result.portfolio.orders.values
    symbols = sorted(["MSFT", "AAPL"])
    assert result.orders.height > 10 and set(rec["side"]) == {0, 1} and set(rec["col"]) == {0, 1}
    assert result.orders["symbol"].to_list() == [symbols[c] for c in rec["col"]]
    assert result.orders["side"].to_list() == ["buy" if s == 0 else "sell" for s in rec["side"]]
    trades = result.portfolio.trades.values
    assert set(trades["direction"]) == {0, 1}
    assert result.trades["symbol"].to_list() == [symbols[c] for c in trades["col"]]
    assert result.trades["direction"].to_list() == ["long" if d == 0 else "short" for d in trades["direction"]]
    assert np.array_equal(result.trades["closed"].to_numpy(), trades["status"] == 1)
