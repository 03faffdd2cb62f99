"""book_values equals vectorbt's own cash(), asset_value() and value(), bit for bit."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from backtests.engine import BacktestConfig, run_backtest, simulate, to_market
from backtests.market_values import book_values
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS


def _assert_same_as_vectorbt(pf: object) -> None:
    book = book_values(pf)
    assert np.array_equal(book.cash, np.asarray(pf.cash()).ravel())  # type: ignore[attr-defined]
    assert np.array_equal(book.held, np.asarray(pf.asset_value(group_by=False)), equal_nan=True)  # type: ignore[attr-defined]
    assert np.array_equal(book.equity, np.asarray(pf.value()).ravel())  # type: ignore[attr-defined]
    held = np.asarray(pf.asset_value(group_by=False))  # type: ignore[attr-defined]
    assert book.exposure == float(np.mean(np.any(np.abs(held) > 0, axis=1)))


@pytest.mark.parametrize("config", [BacktestConfig(fees_bps=2.0, slippage_bps=1.0, allow_short=True), BacktestConfig(fractional=True, fee_per_share=0.01)])
def test_the_engine_s_portfolios(config: BacktestConfig) -> None:
    bars = SyntheticSource(seed=8).fetch(["MSFT", "AAPL", "JPM"], "1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))
    market = to_market(SMA_CROSS.signals(bars, SMA_CROSS.params(fast=3, slow=9, allow_short=True, fraction=0.3)))
    pf = simulate(market, config)
    assert pf.orders.count() > 20
    _assert_same_as_vectorbt(pf)
    result = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(fast=3, slow=9, allow_short=True, fraction=0.3), config)
    assert np.array_equal(result.equity["equity"].to_numpy(), np.asarray(pf.value()).ravel())
    assert np.array_equal(result.equity["cash"].to_numpy(), np.asarray(pf.cash()).ravel())


def test_missing_prices_are_filled_as_vectorbt_fills_them() -> None:
    """A NaN close is forward/back filled; a symbol with no price at all is worth 0, never NaN."""
    nan = np.nan
    close = pd.DataFrame({"A": [10.0, nan, 11.0, nan, 12.0, 12.5], "B": [nan, 20.0, 21.0, 19.0, nan, 18.0], "C": [nan] * 6})
    size = pd.DataFrame({"A": [5.0, nan, -5.0, 3.0, nan, nan], "B": [nan, -2.0, nan, nan, 2.0, nan], "C": [nan] * 6})
    price = close.ffill().bfill()
    pf = vbt.Portfolio.from_orders(close, size, price=price, fees=0.001, init_cash=1_000.0, group_by=True, cash_sharing=True)
    assert np.isnan(np.asarray(pf.close)).any() and pf.orders.count() == 5
    _assert_same_as_vectorbt(pf)


def test_refuses_a_portfolio_it_does_not_describe() -> None:
    close = pd.DataFrame({"A": [10.0, 11.0], "B": [20.0, 21.0]})
    pf = vbt.Portfolio.from_orders(close, 1.0, init_cash=1_000.0)
    with pytest.raises(ValueError, match="one group with shared cash"):
        book_values(pf)
