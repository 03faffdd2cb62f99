"""The quarantine is read by the rows' own timestamps, whatever partition holds them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from lake import store
from lake.calendar import session_bounds
from lake.errors import LakeError
from lake.quarantine import read_quarantine
from lake.sources.synthetic import SyntheticSource
from lake.validation import validate_bars

FRIDAY = "2024-11-22"
SUNDAY_BAR = datetime(2024, 11, 24, 15, 0, tzinfo=UTC)  # a weekend row in a file of Friday's bars


def _quarantine_friday(root: Path) -> pl.DataFrame:
    """What the Dagster ingest does with a Friday partition whose rows include a Sunday bar: the
    Sunday row is quarantined (in_session) and stored in Friday's partition."""
    bars = SyntheticSource(seed=3).fetch(["AAPL"], "1m", *session_bounds(FRIDAY))
    weekend = bars.tail(1).with_columns(pl.lit(SUNDAY_BAR).alias("ts"))
    report = validate_bars(pl.concat([bars, weekend]), timeframe="1m", engine="polars")
    store.replace_partition(root, store.QUARANTINE, "1m", "AAPL", FRIDAY, report.quarantine)
    return report.quarantine


def test_a_weekend_row_is_found_by_its_own_date(tmp_path: Path) -> None:
    stored = _quarantine_friday(tmp_path)
    assert stored["check"].to_list() == ["in_session"]
    sunday = (date(2024, 11, 24), date(2024, 11, 25))
    # Folder pruning (the bars' reader) looks in Sunday's partition and around it, not in Friday's:
    assert store.read_frame(tmp_path, store.QUARANTINE, "1m", ["AAPL"], *sunday).is_empty()
    found = read_quarantine(tmp_path, "1m", ["AAPL"], *sunday)
    assert found["ts"].to_list() == [SUNDAY_BAR]
    assert "outside the AAPL session hours" in found["reason"][0]
    assert read_quarantine(tmp_path, "1m", ["AAPL"], date(2024, 11, 22), date(2024, 11, 24)).is_empty()  # nothing else
    assert read_quarantine(tmp_path, "1m", ["AAPL"])["ts"].to_list() == [SUNDAY_BAR]  # no bounds: all


def test_symbols_without_quarantine_and_naive_bounds(tmp_path: Path) -> None:
    _quarantine_friday(tmp_path)
    assert read_quarantine(tmp_path, "1m", ["MSFT"]).is_empty()  # nothing quarantined: no rows, no error
    assert read_quarantine(tmp_path, "1m", ["MSFT", "AAPL"]).height == 1
    with pytest.raises(LakeError, match="timezone-naive"):
        read_quarantine(tmp_path, "1m", ["AAPL"], datetime(2024, 11, 24))
