"""Lake fixtures: a day of synthetic bars to corrupt."""

from __future__ import annotations

import polars as pl
import pytest

from lake.calendar import session_bounds
from lake.sources.synthetic import SyntheticSource


@pytest.fixture(scope="session")
def day_bars() -> pl.DataFrame:
    """AAPL and MSFT 1m bars for 2024-11-27 (a full session: 390 bars each)."""
    start, end = session_bounds("2024-11-27")
    return SyntheticSource(seed=3).fetch(["AAPL", "MSFT"], "1m", start, end)
