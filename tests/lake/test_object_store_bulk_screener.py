"""Bulk ingest and the screener's files on an object-store lake (moto's S3 server on a loopback
port), each equal to the same work on a local lake: the bar before the range read back from the
bucket for the jump rule, a partition that lost all its clean rows removed, a screen written and
read back by its day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake.bulk import BulkSummary, bulk_ingest
from lake.calendar import session_bounds
from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.quarantine import read_quarantine
from lake.screener import ScreenerRules, chosen_symbols, screen, screener_path, write_screen
from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars
from tests.lake.test_s3_lake import _objects, endpoint, s3_root  # noqa: F401  # fixtures: moto's server, a fresh prefix

SYMBOLS = ["AAPL", "MSFT"]
DAY1, DAY2 = "2024-11-25", "2024-11-26"


class _Scaled:
    """The offline source with MSFT's bars of DAY2 multiplied by `factor`, or with every one of them
    impossible (high below low) when `broken`."""

    name = "synthetic-scaled"

    def __init__(self, factor: float = 1.0, *, broken: bool = False) -> None:
        self.factor, self.broken = factor, broken

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        bars = SyntheticSource(seed=4).fetch(symbols, timeframe, start, end)
        hit = (pl.col("symbol") == "MSFT") & (pl.col("ts") >= session_bounds(DAY2)[0])
        bars = bars.with_columns(pl.when(hit).then(pl.col(c) * self.factor).otherwise(pl.col(c)) for c in ("open", "high", "low", "close"))
        if self.broken:
            bars = bars.with_columns(pl.when(hit).then(pl.col("low") - 1.0).otherwise(pl.col("high")).alias("high"))
        return bars


def _ingest(root: Path | ObjectPath, source: _Scaled, day: str) -> BulkSummary:
    return bulk_ingest(source, SYMBOLS, "1m", *session_bounds(day), root)


def _local_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_bulk_ingest_reads_the_bar_before_from_the_bucket_and_removes_emptied_partitions(tmp_path: Path, s3_root: ObjectPath) -> None:  # noqa: F811
    for root in (tmp_path, s3_root):
        assert _ingest(root, _Scaled(), DAY1).quarantined_rows == 0
    # DAY2's first MSFT bar is 100x the close stored for DAY1: only a reader of the lake's last bar sees it.
    jumped = [_ingest(root, _Scaled(100.0), DAY2) for root in (tmp_path, s3_root)]
    assert jumped[0] == jumped[1] and jumped[1].blocking_failures["price_jump"] == 1
    assert _objects(s3_root) == _local_files(tmp_path)
    # Every MSFT bar of DAY2 is now bad: its bars partition goes, the quarantine holds them all.
    emptied = [_ingest(root, _Scaled(broken=True), DAY2) for root in (tmp_path, s3_root)]
    assert emptied[0] == emptied[1] and emptied[1].clean_rows == 390
    gone = f"bars/timeframe=1m/symbol=MSFT/date={DAY2}/part.parquet"
    assert gone not in _objects(s3_root) and _objects(s3_root) == _local_files(tmp_path)
    for name in _local_files(tmp_path):
        assert (s3_root / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert_frame_equal(read_bars(s3_root, SYMBOLS, "1m"), read_bars(tmp_path, SYMBOLS, "1m"))
    assert read_quarantine(s3_root, "1m", ["MSFT"]).filter(pl.col("ts") >= session_bounds(DAY2)[0]).height == 390


def test_a_screen_is_written_to_the_bucket_and_read_back_by_its_day(tmp_path: Path, s3_root: ObjectPath) -> None:  # noqa: F811
    bars = SyntheticSource(seed=4).fetch(["AAPL", "JPM", "MSFT"], "1d", datetime(2024, 9, 1, tzinfo=UTC), datetime(2024, 11, 27, tzinfo=UTC))
    frame = screen(bars, ["AAPL", "JPM", "MSFT"], date(2024, 11, 27), ScreenerRules(lookback=10, max_symbols=2))
    paths = [write_screen(root, "2024-11-27", frame) for root in (tmp_path, s3_root)]
    assert paths[1] == screener_path(s3_root, "2024-11-27") and str(paths[1]) == f"{s3_root}/screener/date=2024-11-27/part.parquet"
    assert _objects(s3_root) == ["screener/date=2024-11-27/part.parquet"]
    assert paths[1].read_bytes() == Path(paths[0]).read_bytes()
    chosen = chosen_symbols(s3_root, "2024-11-27")
    assert chosen == chosen_symbols(tmp_path, "2024-11-27") and chosen == sorted(frame.filter("chosen")["symbol"].to_list()) and len(chosen) == 2
    with pytest.raises(LakeError, match=f"no output for 2024-11-26 \\({s3_root}/screener/date=2024-11-26/part.parquet\\)"):
        chosen_symbols(s3_root, "2024-11-26")
