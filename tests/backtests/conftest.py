"""Backtest fixtures: real-looking bars from the lake's generator, written and read through the lake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars, replace_partitions

SYMBOLS = ["AAPL", "JPM", "XOM"]


@pytest.fixture(scope="session")
def daily_bars(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """Two years of daily bars for three symbols, via the lake (write, then pruned read)."""
    root: Path = tmp_path_factory.mktemp("lake")
    bars = SyntheticSource(seed=5).fetch(SYMBOLS, "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    return read_bars(root, SYMBOLS, "1d", datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="session")
def hourly_bars() -> pl.DataFrame:
    """Three months of hourly bars for two symbols."""
    return SyntheticSource(seed=9).fetch(SYMBOLS[:2], "1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
