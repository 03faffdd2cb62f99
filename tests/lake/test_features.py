"""Features: right values, and no lookahead (a row never changes when later rows arrive)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake.features import FEATURES, compute_features
from lake.sources.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    return SyntheticSource().fetch(["AAPL", "XOM"], "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("k", [0, 13, 14, 49, 120, 249])
def test_prefix_features_equal_full_features(daily: pl.DataFrame, k: int) -> None:
    full = compute_features(daily)
    for symbol in ("AAPL", "XOM"):
        rows = daily.filter(pl.col("symbol") == symbol)
        prefix = compute_features(rows.head(k + 1)).tail(1)
        assert_frame_equal(prefix, full.filter(pl.col("symbol") == symbol).slice(k, 1))


def test_values_match_textbook_definitions(daily: pl.DataFrame) -> None:
    f = compute_features(daily).filter(pl.col("symbol") == "AAPL")
    close = f["close"].to_numpy()
    assert f["sma_20"][30] == pytest.approx(close[11:31].mean())
    assert f["ret_1"][5] == pytest.approx(close[5] / close[4] - 1)
    assert f["vol_20"][40] == pytest.approx(np.std(np.diff(np.log(close[20:41])), ddof=1))
    # RSI by Wilder's recursion, written out.
    change = np.diff(close)
    gain, loss = np.clip(change, 0, None), np.clip(-change, 0, None)
    avg_gain, avg_loss = gain[0], loss[0]
    for g, lo in zip(gain[1:60], loss[1:60], strict=True):
        avg_gain, avg_loss = avg_gain + (g - avg_gain) / 14, avg_loss + (lo - avg_loss) / 14
    assert f["rsi_14"][60] == pytest.approx(100 - 100 / (1 + avg_gain / avg_loss))
    assert f["rsi_14"].is_between(0, 100).all()
    assert set(FEATURES) <= set(f.columns)
