"""Bulk ingest measures the first day's jump from the bar stored before it, as the Dagster ingest does."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lake import store
from lake.bulk import bulk_ingest
from lake.calendar import session_bounds
from lake.corporate_actions import corporate_actions_path
from lake.sources.synthetic import SyntheticSource

SYMBOLS = ["AAPL", "MSFT"]
DAY1, DAY2 = session_bounds("2024-11-25"), session_bounds("2024-11-26")


class ScaledSource:
    """The synthetic source with every price multiplied by `factor` (cents for dollars: 100)."""

    name = "scaled"

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def fetch(self, symbols: list[str], timeframe: str, start: object, end: object) -> pl.DataFrame:
        bars = SyntheticSource(seed=5).fetch(symbols, timeframe, start, end)  # type: ignore[arg-type]
        return bars.with_columns(pl.col("open", "high", "low", "close", "vwap") * self.factor)


def _day2(root: Path, **kwargs: object) -> object:
    bulk_ingest(ScaledSource(), SYMBOLS, "1m", DAY1[0], DAY1[1], root)  # the stored day before
    return bulk_ingest(ScaledSource(100.0), SYMBOLS, "1m", DAY2[0], DAY2[1], root, **kwargs)  # type: ignore[arg-type]


def test_a_first_day_100x_the_stored_bar_before_it_is_blocked(tmp_path: Path) -> None:
    summary = _day2(tmp_path)
    assert summary.failed_checks["price_jump"] == len(SYMBOLS)  # type: ignore[attr-defined]  # one row per symbol: the first
    quarantine = store.read_frame(tmp_path, store.QUARANTINE, "1m", SYMBOLS)
    assert quarantine["check"].to_list() == ["price_jump"] * len(SYMBOLS)
    assert quarantine["ts"].to_list() == [DAY2[0]] * len(SYMBOLS)
    assert all("x the previous close" in r and "corporate_actions.csv" in r for r in quarantine["reason"].to_list())


def test_a_declared_reverse_split_explains_the_jump(tmp_path: Path) -> None:
    path = corporate_actions_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("symbol,ex_date,ratio\n" + "".join(f"{s},2024-11-26,0.01\n" for s in SYMBOLS))
    summary = _day2(tmp_path)
    assert "price_jump" not in summary.failed_checks  # type: ignore[attr-defined]
    assert summary.quarantined_rows == 0  # type: ignore[attr-defined]


def test_the_threshold_is_configurable(tmp_path: Path) -> None:
    assert "price_jump" not in _day2(tmp_path / "lenient", max_jump=200.0).failed_checks  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="max_jump must be a number > 1"):
        _day2(tmp_path / "bad", max_jump=1.0)
