"""Compaction of a symbol-month on an object-store lake (moto's S3 server on a loopback port): the
same month objects as a local lake's month files, byte for byte, every read the same before and
after, and every bar exactly once in each state a killed or raced compaction can leave."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake import store
from lake.compaction import _remove_folded_objects, compact, compact_month, months_to_compact
from lake.filesystem import ObjectPath
from lake.sources.synthetic import SyntheticSource
from tests.lake.test_s3_lake import _objects, endpoint, s3_root  # noqa: F401  # endpoint, s3_root: fixtures

SYMBOLS = ["AAPL", "MSFT"]
START, END = datetime(2024, 5, 28, tzinfo=UTC), datetime(2024, 7, 4, tzinfo=UTC)  # late May .. early July
DAY = "2024-06-12"
WINDOWS = [  # the whole range, one month, one day, a range across the month boundary
    (None, None), (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)),
    (datetime(2024, 6, 12, 13, tzinfo=UTC), datetime(2024, 6, 13, tzinfo=UTC)),
    (datetime(2024, 5, 30, tzinfo=UTC), datetime(2024, 6, 4, 15, 30, tzinfo=UTC)),
]  # fmt: skip


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return SyntheticSource(seed=5).fetch(SYMBOLS, "1m", START, END)


@pytest.fixture
def lake(s3_root: ObjectPath, bars: pl.DataFrame) -> ObjectPath:  # noqa: F811
    store.replace_partitions(s3_root, "bars", "1m", bars)  # day objects, as ingest writes them
    return s3_root


def _reads(root: Path | ObjectPath) -> list[pl.DataFrame]:
    return [store.read_bars(root, SYMBOLS, "1m", lo, hi) for lo, hi in WINDOWS]


def _assert_reads(root: Path | ObjectPath, expected: list[pl.DataFrame]) -> None:
    for got, want in zip(_reads(root), expected, strict=True):
        assert_frame_equal(got, want)


def _day(frame: pl.DataFrame, symbol: str, day: str) -> pl.DataFrame:
    return frame.filter((pl.col("symbol") == symbol) & (store.exchange_date() == date.fromisoformat(day)))


def test_an_s3_month_compacts_to_the_local_lakes_month_files_and_reads_the_same(lake: ObjectPath, bars: pl.DataFrame, tmp_path: Path) -> None:
    local = tmp_path / "local"
    store.replace_partitions(local, "bars", "1m", bars)
    before = _reads(lake)
    assert before[0].height == bars.height
    assert months_to_compact(lake, "bars", "1m", date(2024, 7, 15)) == months_to_compact(local, "bars", "1m", date(2024, 7, 15))
    done = compact(lake, "bars", "1m", before=date(2024, 7, 15))  # July is still filling: left as days
    assert done == compact(local, "bars", "1m", before=date(2024, 7, 15))
    assert {(c.symbol, c.month) for c in done} == {(s, m) for s in SYMBOLS for m in ("2024-05", "2024-06")}
    _assert_reads(lake, before)
    objects = _objects(lake)  # (empty folder markers of the removed days are checked empty by _objects)
    assert objects == sorted(str(p.relative_to(local)) for p in local.rglob("*.parquet"))
    assert [o for o in objects if "date=2024-07" not in o] == [f"bars/timeframe=1m/symbol={s}/month={m}/part.parquet" for s in SYMBOLS for m in ("2024-05", "2024-06")]
    for name in objects:
        assert (lake / name).read_bytes() == (local / name).read_bytes(), name
    assert compact(lake, "bars", "1m", before=date(2024, 7, 15)) == []  # nothing left to fold


def test_an_s3_compaction_killed_while_removing_day_objects_shows_every_bar_once(lake: ObjectPath) -> None:
    before = _reads(lake)

    def killed(digests: dict[ObjectPath, str]) -> int:
        first = dict(list(digests.items())[:3])
        _remove_folded_objects(first)  # three day objects gone, then the process dies
        raise KeyboardInterrupt("killed while removing the folded day objects")

    with pytest.raises(KeyboardInterrupt):
        compact_month(lake, "bars", "1m", "AAPL", "2024-06", remove_objects=killed)
    objects = _objects(lake)
    assert "bars/timeframe=1m/symbol=AAPL/month=2024-06/part.parquet" in objects
    assert f"bars/timeframe=1m/symbol=AAPL/date={DAY}/part.parquet" in objects  # both layouts at once
    _assert_reads(lake, before)  # no bar twice, none lost
    compact_month(lake, "bars", "1m", "AAPL", "2024-06")  # the next compaction finishes the job
    _assert_reads(lake, before)
    assert not [o for o in _objects(lake) if "symbol=AAPL/date=2024-06" in o]


def test_a_day_object_replaced_while_compacting_is_kept_and_wins(lake: ObjectPath, bars: pl.DataFrame) -> None:
    changed = _day(bars, "AAPL", DAY).with_columns(pl.col("volume") + 1)  # the same size of object, other bytes

    def ingest_meanwhile(digests: dict[ObjectPath, str]) -> int:
        store.replace_partition(lake, "bars", "1m", "AAPL", DAY, changed)  # a run re-ingests the day mid-compaction
        return _remove_folded_objects(digests)

    compact_month(lake, "bars", "1m", "AAPL", "2024-06", remove_objects=ingest_meanwhile)
    assert [o for o in _objects(lake) if "symbol=AAPL/date=2024-06" in o] == [f"bars/timeframe=1m/symbol=AAPL/date={DAY}/part.parquet"]
    got = store.read_bars(lake, ["AAPL"], "1m")
    assert_frame_equal(_day(got, "AAPL", DAY), changed)
    assert got.height == bars.filter(pl.col("symbol") == "AAPL").height  # every other bar once, from the month object


def test_a_day_reingested_empty_after_an_s3_compaction_holds_nothing(lake: ObjectPath, bars: pl.DataFrame) -> None:
    """An empty re-ingest of a compacted day must leave a tombstone (an empty day object) hiding the
    month's rows of that day; deleting the day object instead would bring them back."""
    compact(lake, "bars", "1m", before=date(2024, 7, 1))
    store.replace_partition(lake, "bars", "1m", "AAPL", DAY, bars.clear())  # e.g. every row quarantined
    assert _day(store.read_bars(lake, ["AAPL"], "1m"), "AAPL", DAY).is_empty()
    compact(lake, "bars", "1m", before=date(2024, 7, 1))  # the tombstone folds in: the month loses the day
    got = store.read_bars(lake, ["AAPL"], "1m")
    assert _day(got, "AAPL", DAY).is_empty() and got.height == bars.filter(pl.col("symbol") == "AAPL").height - 390
