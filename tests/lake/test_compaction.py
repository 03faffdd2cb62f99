"""Compaction: a symbol-month's day files folded into one month file, read the same in every state."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake import store
from lake.compaction import Stamp, _remove_folded, compact, compact_month, months_to_compact
from lake.sources.synthetic import SyntheticSource

SYMBOLS = ["AAPL", "MSFT"]
START, END = datetime(2024, 5, 28, tzinfo=UTC), datetime(2024, 7, 4, tzinfo=UTC)  # late May .. early July
DAY = "2024-06-12"
WINDOWS = [  # the whole range, one month, one day, a range across the month boundary
    (None, None), (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)),
    (datetime(2024, 6, 12, 13, tzinfo=UTC), datetime(2024, 6, 13, tzinfo=UTC)),
    (datetime(2024, 5, 30, tzinfo=UTC), datetime(2024, 6, 4, 15, 30, tzinfo=UTC)),
]


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return SyntheticSource(seed=5).fetch(SYMBOLS, "1m", START, END)


@pytest.fixture
def lake(tmp_path: Path, bars: pl.DataFrame) -> Path:
    store.replace_partitions(tmp_path, "bars", "1m", bars)  # day files, as ingest writes them
    return tmp_path


def _reads(root: Path) -> list[pl.DataFrame]:
    return [store.read_bars(root, SYMBOLS, "1m", lo, hi) for lo, hi in WINDOWS]


def _assert_reads(root: Path, expected: list[pl.DataFrame]) -> None:
    for got, want in zip(_reads(root), expected, strict=True):
        assert_frame_equal(got, want)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "bars/timeframe=1m")) for p in root.rglob("*.parquet"))


def _day(bars: pl.DataFrame, symbol: str, day: str) -> pl.DataFrame:
    local = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()
    return bars.filter((pl.col("symbol") == symbol) & (local == date.fromisoformat(day)))


def test_reads_are_the_same_before_and_after_compaction_and_files_few(lake: Path, bars: pl.DataFrame) -> None:
    before = _reads(lake)
    assert before[0].height == bars.height
    done = compact(lake, "bars", "1m", before=date(2024, 7, 15))  # July is still filling: left as days
    assert {(c.symbol, c.month) for c in done} == {(s, m) for s in SYMBOLS for m in ("2024-05", "2024-06")}
    _assert_reads(lake, before)
    july = [f for f in _files(lake) if "date=2024-07" in f]
    assert [f for f in _files(lake) if f not in july] == [f"symbol={s}/month={m}/part.parquet" for s in SYMBOLS for m in ("2024-05", "2024-06")]
    assert len(july) == 2 * 3  # 07-01, 07-02 and the half day 07-03 stay day files
    assert not list(lake.glob("bars/timeframe=1m/symbol=*/date=2024-06-*"))  # folders gone too
    assert compact(lake, "bars", "1m", before=date(2024, 7, 15)) == []  # nothing left to fold


def test_reingesting_a_compacted_day_replaces_exactly_that_day(lake: Path, bars: pl.DataFrame) -> None:
    before = _reads(lake)
    compact(lake, "bars", "1m", before=date(2024, 7, 1))
    original = _day(bars, "AAPL", DAY)
    changed = original.with_columns(pl.col("close") + 1.0, pl.col("high") + 1.0)
    store.replace_partition(lake, "bars", "1m", "AAPL", DAY, changed)
    got = store.read_bars(lake, ["AAPL"], "1m")
    assert_frame_equal(_day(got, "AAPL", DAY), changed)  # the new version, once
    assert_frame_equal(got.filter(~pl.col("ts").is_in(original["ts"].implode())), bars.filter((pl.col("symbol") == "AAPL") & ~pl.col("ts").is_in(original["ts"].implode())))
    store.replace_partition(lake, "bars", "1m", "AAPL", DAY, original)  # re-running the day as it was: the same lake
    _assert_reads(lake, before)
    compact(lake, "bars", "1m", before=date(2024, 7, 1))
    _assert_reads(lake, before)
    assert not [f for f in _files(lake) if "date=2024-06" in f]


def test_a_day_reingested_empty_after_compaction_holds_nothing(lake: Path, bars: pl.DataFrame) -> None:
    compact(lake, "bars", "1m", before=date(2024, 7, 1))
    store.replace_partition(lake, "bars", "1m", "AAPL", DAY, bars.clear())  # e.g. every row quarantined
    assert _day(store.read_bars(lake, ["AAPL"], "1m"), "AAPL", DAY).is_empty()
    compact(lake, "bars", "1m", before=date(2024, 7, 1))  # the tombstone folds in: the month loses the day
    got = store.read_bars(lake, ["AAPL"], "1m")
    assert _day(got, "AAPL", DAY).is_empty()
    assert got.height == bars.filter(pl.col("symbol") == "AAPL").height - 390


def test_a_compaction_killed_before_removing_the_day_files_shows_every_bar_once(lake: Path) -> None:
    before = _reads(lake)

    def killed(stamps: dict[Path, Stamp]) -> int:
        raise KeyboardInterrupt("killed after the month file was written")

    with pytest.raises(KeyboardInterrupt):
        compact_month(lake, "bars", "1m", "AAPL", "2024-06", remove=killed)
    files = _files(lake)
    assert "symbol=AAPL/month=2024-06/part.parquet" in files and f"symbol=AAPL/date={DAY}/part.parquet" in files  # both layouts
    _assert_reads(lake, before)  # no bar twice, none lost
    compact_month(lake, "bars", "1m", "AAPL", "2024-06")  # the next compaction finishes the job
    _assert_reads(lake, before)
    assert not [f for f in _files(lake) if f.startswith("symbol=AAPL/date=2024-06")]


def test_a_day_file_replaced_while_compacting_is_kept_and_wins(lake: Path, bars: pl.DataFrame) -> None:
    changed = _day(bars, "AAPL", DAY).with_columns(pl.col("volume") + 1)

    def ingest_meanwhile(stamps: dict[Path, Stamp]) -> int:
        store.replace_partition(lake, "bars", "1m", "AAPL", DAY, changed)  # a run re-ingests the day mid-compaction
        return _remove_folded(stamps)

    compact_month(lake, "bars", "1m", "AAPL", "2024-06", remove=ingest_meanwhile)
    assert [f for f in _files(lake) if f.startswith("symbol=AAPL/date=2024-06")] == [f"symbol=AAPL/date={DAY}/part.parquet"]
    assert_frame_equal(_day(store.read_bars(lake, ["AAPL"], "1m"), "AAPL", DAY), changed)


def test_a_day_file_with_rows_off_its_date_is_not_folded(tmp_path: Path, bars: pl.DataFrame) -> None:
    """Month rows are told apart by exchange date: a day file holding another date's rows (a
    weekend row in Friday's quarantine) must stay a day file, or its month would lose or repeat rows."""
    friday = _day(bars, "AAPL", "2024-06-14")
    saturday = friday.tail(1).with_columns(pl.col("ts").dt.offset_by("1d"))
    store.replace_partition(tmp_path, "quarantine", "1m", "AAPL", "2024-06-14", pl.concat([friday, saturday]))
    store.replace_partition(tmp_path, "quarantine", "1m", "AAPL", DAY, _day(bars, "AAPL", DAY))
    before = store.read_frame(tmp_path, "quarantine", "1m", ["AAPL"])
    [done] = compact(tmp_path, "quarantine", "1m", before=date(2024, 7, 1))
    assert (done.folded, done.kept) == (1, 1)
    assert_frame_equal(store.read_frame(tmp_path, "quarantine", "1m", ["AAPL"]), before)


def test_only_closed_months_with_day_files_are_listed(lake: Path) -> None:
    assert months_to_compact(lake, "bars", "1m", date(2024, 6, 30), ["MSFT"]) == [("MSFT", "2024-05")]
    assert months_to_compact(lake, "quarantine", "1m", date(2024, 6, 30)) == []
