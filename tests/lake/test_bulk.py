"""Bulk backfill: the same partitions as the Dagster ingest, idempotent, nothing half-written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake import store
from lake.bulk import BulkSummary, bulk_ingest
from lake.calendar import session_bounds
from lake.errors import LakeError, SourceError
from lake.sources.synthetic import SyntheticSource

SYMBOLS = ["AAPL", "MSFT", "SPY"]
START = session_bounds("2024-11-25")[0]
END = datetime(2024, 11, 30, tzinfo=UTC)  # the Thanksgiving week: 3 full sessions and a half day
SESSIONS = ["2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29"]


@dataclass
class EditedSource:
    """The synthetic source with an edit applied to what it returns, and the calls it saw."""

    edit: Callable[[pl.DataFrame], pl.DataFrame] = lambda df: df
    name: str = "edited"
    calls: list[list[str]] = field(default_factory=list)

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        self.calls.append(list(symbols))
        return self.edit(SyntheticSource(seed=5).fetch(symbols, timeframe, start, end))


def _files(root: Path, dataset: str) -> list[str]:
    return sorted(str(p.relative_to(root / dataset)) for p in (root / dataset).rglob("*.parquet"))


def _ingest(source: EditedSource, root: Path, **kwargs: object) -> BulkSummary:
    options: dict[str, object] = {"chunk_symbols": 2, **kwargs}
    return bulk_ingest(source, SYMBOLS, "1m", START, END, root, **options)  # type: ignore[arg-type]


def test_writes_the_dagster_layout_chunk_by_chunk(tmp_path: Path) -> None:
    source, seen = EditedSource(), []
    summary = _ingest(source, tmp_path, on_chunk=seen.append)

    expected = SyntheticSource(seed=5).fetch(SYMBOLS, "1m", START, END)
    assert_frame_equal(store.read_bars(tmp_path, SYMBOLS, "1m"), expected)
    assert _files(tmp_path, "bars") == [
        f"timeframe=1m/symbol={s}/date={d}/part.parquet" for s in SYMBOLS for d in SESSIONS
    ]
    assert source.calls == [["AAPL", "MSFT"], ["SPY"]]
    assert [part.rows for part in seen] == [2 * expected.height // 3, expected.height // 3]
    assert (summary.rows, summary.clean_rows, summary.quarantined_rows, summary.partitions) == (
        expected.height, expected.height, 0, 12
    )
    assert not (tmp_path / store.QUARANTINE).exists()


def test_year_layout_reads_back_the_same_bars(tmp_path: Path) -> None:
    _ingest(EditedSource(), tmp_path / "by-day")
    _ingest(EditedSource(), tmp_path / "by-year", period="year")
    assert _files(tmp_path / "by-year", "bars") == [f"timeframe=1m/symbol={s}/year=2024/part.parquet" for s in SYMBOLS]
    assert_frame_equal(store.read_bars(tmp_path / "by-year", SYMBOLS, "1m"), store.read_bars(tmp_path / "by-day", SYMBOLS, "1m"))


def _break_day(symbol: str, day: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Every bar of `symbol` on `day` gets high below low (a blocking failure)."""
    lo, hi = session_bounds(day)
    hit = (pl.col("symbol") == symbol) & pl.col("ts").is_between(lo, hi, closed="left")
    return lambda df: df.with_columns(pl.when(hit).then(pl.col("low") - 1.0).otherwise(pl.col("high")).alias("high"))


def test_reruns_replace_partitions_exactly_quarantine_included(tmp_path: Path) -> None:
    clean = _ingest(EditedSource(), tmp_path)
    before = store.read_bars(tmp_path, SYMBOLS, "1m")

    broken = _ingest(EditedSource(_break_day("MSFT", "2024-11-26")), tmp_path)
    assert broken.quarantined_rows == 390 and broken.failed_checks["ohlc_consistent"] == 390
    assert "symbol=MSFT/date=2024-11-26" not in " ".join(_files(tmp_path, "bars"))  # the old clean day is gone
    quarantined = store.read_frame(tmp_path, store.QUARANTINE, "1m", ["MSFT"])
    assert quarantined.height == 390 and set(quarantined["check"]) == {"ohlc_consistent"}
    assert store.read_bars(tmp_path, SYMBOLS, "1m").height == before.height - 390

    again = _ingest(EditedSource(), tmp_path)
    assert again == clean
    assert_frame_equal(store.read_bars(tmp_path, SYMBOLS, "1m"), before)
    assert _files(tmp_path, store.QUARANTINE) == []  # fixed rows leave quarantine


def test_a_failing_source_keeps_whole_chunks_only(tmp_path: Path) -> None:
    def fail_on_spy(df: pl.DataFrame) -> pl.DataFrame:
        if "SPY" in df["symbol"].to_list():
            raise SourceError("edited: SPY 1m: HTTP 500")
        return df

    with pytest.raises(SourceError, match="SPY"):
        _ingest(EditedSource(fail_on_spy), tmp_path)
    written = store.read_bars(tmp_path, ["AAPL", "MSFT"], "1m")
    assert written.height == 2 * 390 * 3 + 2 * 210  # three full sessions and the half day, each
    assert "symbol=SPY" not in " ".join(_files(tmp_path, "bars"))


def test_rows_that_fit_no_partition_are_refused_not_dropped(tmp_path: Path) -> None:
    no_symbol = EditedSource(lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("symbol")).alias("symbol")))
    with pytest.raises(LakeError, match=r"\['AAPL', 'MSFT'\]: 1 row\(s\) have no symbol or timestamp"):
        _ingest(no_symbol, tmp_path)
    assert not (tmp_path / "bars").exists()


@pytest.mark.parametrize(("kwargs", "message"), [({"chunk_symbols": 0}, "chunk_symbols"), ({"period": "month"}, "period")])
def test_bad_arguments_name_themselves(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LakeError, match=message):
        _ingest(EditedSource(), tmp_path, **kwargs)


def test_unsorted_input_lands_in_the_same_partitions(tmp_path: Path) -> None:
    bars = SyntheticSource(seed=5).fetch(SYMBOLS, "1m", START, END)
    store.replace_partitions(tmp_path / "sorted", "bars", "1m", bars, period="date")
    store.replace_partitions(tmp_path / "shuffled", "bars", "1m", bars.sample(fraction=1.0, shuffle=True, seed=1), period="date")
    assert _files(tmp_path / "sorted", "bars") == _files(tmp_path / "shuffled", "bars")
    assert_frame_equal(store.read_bars(tmp_path / "shuffled", SYMBOLS, "1m"), store.read_bars(tmp_path / "sorted", SYMBOLS, "1m"))
    assert store.partition_keys(bars, "date") == {(s, d) for s in SYMBOLS for d in SESSIONS}


def test_a_session_the_source_lacks_is_missing_even_at_the_start_of_the_range(tmp_path: Path) -> None:
    """The missing-bars check spans the range asked for, not only the dates the source returned."""
    first_close = session_bounds(SESSIONS[0])[1]
    source = EditedSource(edit=lambda df: df.filter(pl.col("ts") >= first_close))  # no bar of the first session
    summary = bulk_ingest(source, ["AAPL"], "1m", START, END, tmp_path)
    assert summary.failed_checks["missing_bars"] == 390
    assert summary.clean_rows == 390 + 390 + 210 and summary.quarantined_rows == 0


@dataclass
class ExtendedHoursSource(EditedSource):
    """A source that sends pre/after-hours minutes by design, as Alpaca does (`extended_hours`)."""

    extended_hours: bool = True


def _with_premarket_minute(df: pl.DataFrame) -> pl.DataFrame:
    first = df.sort("ts").head(1)
    return pl.concat([first.with_columns(pl.col("ts") - pl.duration(hours=1)), df])  # 08:30 New York


def test_extended_hours_rows_are_set_aside_but_only_blocking_rules_fail_the_command(tmp_path: Path) -> None:
    """`quantlake ingest --bulk` exits 1 on blocking failures (orchestration/bulk.py reads
    `blocking_failures`); an expected extended-hours minute is quarantined and counted, not a failure."""
    source = ExtendedHoursSource(edit=_with_premarket_minute)
    extended = _ingest(source, tmp_path / "a")
    fetches = len(source.calls)  # one early minute per fetched chunk
    assert fetches == 2 and extended.quarantined_rows == fetches and extended.failed_checks == {"extended_hours": fetches}
    assert not extended.blocking_failures
    # The same minute from a source that does not send extended hours is out of session: blocking.
    plain = _ingest(EditedSource(edit=_with_premarket_minute), tmp_path / "b")
    assert plain.quarantined_rows == fetches and plain.blocking_failures == {"in_session": fetches}
