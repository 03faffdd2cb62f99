"""Compaction through Dagster: the bars_1m asset's day partitions, folded by bars_1m_compaction,
read the same, and re-running a compacted day (or the whole range) gives the same lake."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
from polars.testing import assert_frame_equal

from assets.bars import bars_1m
from assets.clock import NOW_TAG
from assets.compaction import bars_1m_compaction
from assets.partitions import add_symbols, intraday_key
from assets.resources import LakeResource, MarketDataResource
from lake.store import read_bars

SYMBOLS = ["AAPL", "MSFT"]
DAYS = ["2024-10-29", "2024-10-30", "2024-10-31", "2024-11-01"]  # across a month's end
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _lake(root: Path) -> pl.DataFrame:
    return read_bars(root, SYMBOLS, "1m")


def _layout(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root / "bars/timeframe=1m")) for p in (root / "bars").rglob("*.parquet"))


def test_a_compacted_month_reads_the_same_and_its_days_rerun_in_place(tmp_path: Path) -> None:
    resources = {"lake": LakeResource(root=str(tmp_path)), "market_data": MarketDataResource(seed=3)}
    backfill = dict(zip(RANGE_TAGS, (str(intraday_key(DAYS[0], SYMBOLS[0])), str(intraday_key(DAYS[-1], SYMBOLS[-1]))), strict=True))
    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        assert dg.materialize([bars_1m], instance=instance, resources=resources, tags=backfill).success
        before = _lake(tmp_path)
        assert before.height == len(SYMBOLS) * len(DAYS) * 390

        done = dg.materialize([bars_1m_compaction], instance=instance, resources=resources, tags={NOW_TAG: "2024-11-15T12:00:00+00:00"})
        meta = done.asset_materializations_for_node("bars_1m_compaction")[0].metadata
        assert meta["day_files_folded"].value == len(SYMBOLS) * 3 and meta["symbol_months"].value == len(SYMBOLS)
        assert _layout(tmp_path) == [f"symbol={s}/{p}" for s in SYMBOLS for p in ("date=2024-11-01", "month=2024-10")]  # November still filling
        assert_frame_equal(_lake(tmp_path), before)

        again = dg.materialize([bars_1m], instance=instance, resources=resources, partition_key=str(intraday_key("2024-10-30", "AAPL")))
        assert again.success
        assert "symbol=AAPL/date=2024-10-30" in _layout(tmp_path)
        assert_frame_equal(_lake(tmp_path), before)  # the day replaced by itself, once
        assert dg.materialize([bars_1m], instance=instance, resources=resources, tags=backfill).success  # the whole range again
        assert_frame_equal(_lake(tmp_path), before)

        dg.materialize([bars_1m_compaction], instance=instance, resources=resources, tags={NOW_TAG: "2024-11-15T12:00:00+00:00"})
        assert not [p for p in _layout(tmp_path) if p.split("/")[1].startswith("date=2024-10")]
        assert_frame_equal(_lake(tmp_path), before)
