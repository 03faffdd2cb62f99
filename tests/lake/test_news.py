"""The news lake: validation quarantines with reasons, days are written atomically, reads are point in time."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from lake.calendar import day_window, session_bounds
from lake.errors import LakeError
from lake.news.schema import NEWS_SCHEMA, NewsSchemaError, conform_news
from lake.news.store import news_path, news_quarantine_path, read_news, read_news_quarantine, write_news_day
from lake.news.synthetic import NEGATIVE_WORDS, POSITIVE_WORDS, SyntheticNewsSource
from lake.news.validation import NewsWindow, validate_news
from lake.sources.synthetic import SyntheticSource, session_prices

DAY = date(2024, 11, 27)  # a Wednesday: its window runs to 00:00 New York on Friday (Thanksgiving is off)
UNIVERSE = ("AAPL", "MSFT")
NEW_YORK = ZoneInfo("America/New_York")


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _row(id: str, symbol: str | None = "AAPL", created: str = "2024-11-27T15:00:00Z", updated: str | None = None, headline: str | None = None) -> dict[str, object]:
    return {
        "id": id,
        "symbol": symbol,
        "created_at": _t(created),
        "updated_at": _t(updated or created),
        "headline": f"headline {id}" if headline is None else headline,
        "summary": "s",
        "source": "test",
        "url": None,
    }


def _frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=NEWS_SCHEMA)


def test_the_window_is_the_session_day_through_the_night_and_holidays() -> None:
    window = NewsWindow.of(DAY)
    assert (window.start, window.end) == day_window(DAY)
    assert window.start == _t("2024-11-27T05:00:00+00:00") and window.end == _t("2024-11-29T05:00:00+00:00")


def test_bad_rows_are_quarantined_each_with_its_reason_and_nothing_is_lost() -> None:
    rows = [
        _row("1"),
        _row("2", symbol="TSLA"),
        _row("3", created="2024-11-26T12:00:00Z"),  # the day before the window
        _row("4", created="2024-11-29T05:00:00Z"),  # the window's end is excluded
        _row("5", headline="   "),
        _row("6", updated="2024-11-27T14:00:00Z"),  # updated before it was created
        _row("7", symbol=None),
        _row("8", updated="2024-11-27T15:05:00Z", headline="first version"),
        _row("8", updated="2024-11-27T16:00:00Z", headline="corrected"),
        _row("8", symbol="MSFT"),  # the same article about another symbol is its own row
        _row("9", created="2024-11-28T20:00:00Z"),  # Thanksgiving evening: still Wednesday's window
    ]
    report = validate_news(_frame(rows), NewsWindow.of(DAY), UNIVERSE)
    assert report.clean.height + report.quarantine.height == len(rows)
    assert sorted(zip(report.clean["id"], report.clean["symbol"], strict=True)) == [("1", "AAPL"), ("8", "AAPL"), ("8", "MSFT"), ("9", "AAPL")]
    assert report.clean.filter(pl.col("symbol") == "AAPL", pl.col("id") == "8")["headline"].item() == "corrected"
    why = {(r["id"], r["check"]): r["reason"] for r in report.quarantine.iter_rows(named=True)}
    assert why[("2", "symbol_known")] == "symbol TSLA is not in the universe"
    assert why[("3", "in_window")] == "created 2024-11-26 07:00 EST is outside the partition's window (2024-11-27 00:00 EST to 2024-11-29 00:00 EST)"
    assert why[("4", "in_window")].startswith("created 2024-11-29 00:00 EST is outside")
    assert why[("5", "headline_present")] == "news 5 for AAPL has an empty headline"
    assert why[("6", "updated_after_created")] == "updated 2024-11-27 09:00 EST before it was created 2024-11-27 10:00 EST"
    assert why[("7", "not_null,symbol_known")].startswith("missing symbol")
    assert why[("8", "id_unique")] == "duplicate of news 8 for AAPL (the version updated last is kept)"
    outcomes = {r.name: (r.passed, r.failed_rows) for r in report.results}
    assert outcomes == {
        "not_null": (False, 1),
        "headline_present": (False, 1),
        "symbol_known": (False, 2),
        "in_window": (False, 2),
        "updated_after_created": (False, 1),
        "id_unique": (False, 1),
    }
    assert not report.passed


def test_clean_news_passes_and_is_sorted() -> None:
    rows = [_row("2", created="2024-11-27T16:00:00Z"), _row("1", symbol="MSFT"), _row("1")]
    report = validate_news(_frame(rows), NewsWindow.of(DAY), UNIVERSE)
    assert report.passed and report.quarantine.is_empty()
    assert list(zip(report.clean["id"], report.clean["symbol"], strict=True)) == [("1", "AAPL"), ("1", "MSFT"), ("2", "AAPL")]


def test_a_naive_time_or_a_missing_column_is_named() -> None:
    with pytest.raises(NewsSchemaError, match="'created_at' is timezone-naive"):
        conform_news(pl.DataFrame({"id": ["1"], "symbol": ["A"], "created_at": [datetime(2024, 1, 2)], "headline": ["h"]}))
    with pytest.raises(NewsSchemaError, match=r"missing required column\(s\) \['headline'\]"):
        conform_news(pl.DataFrame({"id": ["1"], "symbol": ["A"], "created_at": [datetime(2024, 1, 2, tzinfo=UTC)]}))


def test_a_day_is_replaced_whole_and_a_rerun_writes_the_same_bytes(tmp_path: Path) -> None:
    source = SyntheticNewsSource(seed=7)
    window = NewsWindow.of(DAY)
    news = source.fetch_news(list(UNIVERSE), window.start, window.end)
    bad = _frame([_row("x", symbol="TSLA")])
    report = validate_news(pl.concat([news, bad]), window, UNIVERSE)
    path = write_news_day(tmp_path, DAY, report.clean, report.quarantine)
    assert path == news_path(tmp_path, DAY)
    first = path.read_bytes()
    assert_frame_equal(pl.read_parquet(path), news)
    assert read_news_quarantine(tmp_path, DAY)["reason"].to_list() == ["symbol TSLA is not in the universe"]
    write_news_day(tmp_path, DAY, report.clean, report.quarantine)
    assert path.read_bytes() == first
    write_news_day(tmp_path, DAY, report.clean, report.quarantine.clear())  # fixed at the source: quarantine gone
    assert not news_quarantine_path(tmp_path, DAY).exists()
    assert [p.name for p in path.parent.iterdir()] == ["part.parquet"], "no temp file left behind"


# --- point in time ----------------------------------------------------------------------------

def _lake_with(tmp_path: Path, rows: list[dict[str, object]]) -> None:
    frame = _frame(rows)
    for day in ("2024-11-25", "2024-11-26", "2024-11-27"):
        window = NewsWindow.of(day)
        part = frame.filter((pl.col("created_at") >= window.start) & (pl.col("created_at") < window.end))
        report = validate_news(part, window, UNIVERSE)
        assert report.passed
        write_news_day(tmp_path, day, report.clean, report.quarantine)


def test_read_news_as_of_a_decision_time(tmp_path: Path) -> None:
    _lake_with(
        tmp_path,
        [
            _row("a", created="2024-11-25T15:00:00Z"),
            _row("b", created="2024-11-26T15:00:00Z", symbol="MSFT"),
            _row("c", created="2024-11-27T14:00:00Z", updated="2024-11-27T18:00:00Z"),  # edited after 16:00
            _row("d", created="2024-11-27T15:59:59Z"),
            _row("e", created="2024-11-27T16:00:00Z"),
            _row("f", created="2024-11-27T16:00:01Z"),
        ],
    )
    until = _t("2024-11-27T16:00:00Z")
    assert read_news(tmp_path, ["AAPL", "MSFT"], until, timedelta(days=3))["id"].to_list() == ["a", "b", "d", "e"]
    assert read_news(tmp_path, ["AAPL"], until, timedelta(days=1))["id"].to_list() == ["d", "e"]
    assert read_news(tmp_path, None, _t("2024-11-27T18:00:00Z"), timedelta(hours=4))["id"].to_list() == ["c", "d", "e", "f"]
    assert read_news(tmp_path, ["XOM"], until).is_empty()
    with pytest.raises(LakeError, match="timezone-naive"):
        read_news(tmp_path, ["AAPL"], datetime(2024, 11, 27, 16))


_minutes = st.integers(min_value=0, max_value=3 * 24 * 60 - 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    articles=st.lists(st.tuples(_minutes, st.integers(min_value=0, max_value=600), st.sampled_from(UNIVERSE)), max_size=25),
    until_minute=st.integers(min_value=-600, max_value=4 * 24 * 60),
    lookback_minutes=st.integers(min_value=0, max_value=5 * 24 * 60),
)
def test_no_headline_created_or_edited_after_the_decision_time_ever_reaches_it(
    tmp_path_factory: pytest.TempPathFactory, articles: list[tuple[int, int, str]], until_minute: int, lookback_minutes: int
) -> None:
    root = tmp_path_factory.mktemp("pit")
    origin = day_window("2024-11-25")[0]
    rows = []
    for i, (created, edit, symbol) in enumerate(articles):
        at = origin + timedelta(minutes=created)
        rows.append({**_row(str(i), symbol=symbol), "created_at": at, "updated_at": at + timedelta(minutes=edit)})
    _lake_with(root, rows)
    until, lookback = origin + timedelta(minutes=until_minute), timedelta(minutes=lookback_minutes)
    got = read_news(root, list(UNIVERSE), until, lookback)
    assert (got["created_at"] <= until).all() and (got["updated_at"] <= until).all()
    assert (got["created_at"] >= until - lookback).all()
    # and nothing that was visible is missed
    visible = {r["id"] for r in rows if until - lookback <= r["created_at"] <= until and r["updated_at"] <= until}  # type: ignore[operator]
    assert set(got["id"].to_list()) == visible


# --- the offline generator ------------------------------------------------------------------------

def test_tone_follows_the_return_known_at_creation_time() -> None:
    source = SyntheticNewsSource(seed=7)
    start, end = day_window("2024-06-03")[0], day_window("2024-08-30")[1]
    news = source.fetch_news(["AAPL", "XOM", "JPM"], start, end)
    assert news.height > 300
    after_close = news.filter(pl.col("id").str.ends_with("-4"))
    agree = checked = 0
    for row in after_close.iter_rows(named=True):
        previous, _, close = session_prices(7, row["symbol"], row["created_at"].astimezone(NEW_YORK).date())
        assert previous is not None
        ret = close / previous - 1
        words = row["headline"].split()
        if any(w in words for w in POSITIVE_WORDS):
            checked += 1
            agree += ret > 0
        elif any(w in words for w in NEGATIVE_WORDS):
            checked += 1
            agree += ret < 0
    assert checked > 50 and agree == checked  # a rise is never called a fall
    # in-session headlines fall inside the session (after the minute whose close they quote)
    in_session = news.filter(pl.col("id").str.extract(r"-(\d)$").cast(pl.Int64).is_between(1, 3))
    bars = SyntheticSource(seed=7)
    for row in in_session.head(20).iter_rows(named=True):
        opened, closed = session_bounds(row["created_at"].astimezone(NEW_YORK).date())
        assert opened < row["created_at"] <= closed
        minutes = bars.fetch([row["symbol"]], "1m", opened, closed)
        last_done = minutes.filter(pl.col("ts") <= row["created_at"] - timedelta(minutes=1))["close"][-1]
        assert f"last trade {last_done:.2f} " in row["summary"]  # the price it quotes was known then


def test_same_seed_same_headlines_whatever_range_was_asked() -> None:
    source = SyntheticNewsSource(seed=3)
    day = day_window(DAY)
    week = source.fetch_news(["NVDA"], day_window("2024-11-25")[0], day_window("2024-11-29")[1])
    alone = SyntheticNewsSource(seed=3).fetch_news(["NVDA"], *day)
    assert_frame_equal(alone, week.filter((pl.col("created_at") >= day[0]) & (pl.col("created_at") < day[1])))
    assert not SyntheticNewsSource(seed=4).fetch_news(["NVDA"], *day).equals(alone)
    report = validate_news(week.filter((pl.col("created_at") >= day[0]) & (pl.col("created_at") < day[1])), NewsWindow.of(DAY), ["NVDA"])
    assert report.passed


def _content_hash(df: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for name in df.columns:
        column = df[name]
        if column.dtype == pl.String:
            digest.update("\x00".join(v or "" for v in column.to_list()).encode())
        else:
            digest.update(column.dt.epoch("us").to_numpy().astype("<i8").tobytes())
    return digest.hexdigest()[:16]


# (seed, symbols, first day, last day) -> digest. Pinned once: a change is a change to every
# user's offline headlines and must be deliberate.
GOLDEN = [
    (7, ("AAPL", "MSFT"), "2024-11-25", "2024-11-29", "a07ed0eb19e9508f"),
    (11, ("XOM",), "2023-03-01", "2023-03-31", "9b7dfc314dc97f00"),
]


@pytest.mark.parametrize(("seed", "symbols", "first", "last", "expected"), GOLDEN)
@pytest.mark.parametrize("today", ["2026-11-29", "2031-01-01"])
def test_golden_headlines_do_not_depend_on_todays_date(seed: int, symbols: tuple[str, ...], first: str, last: str, expected: str, today: str) -> None:
    from lake import calendar
    from lake.sources import synthetic

    def clear() -> None:
        for cached in (calendar.get_calendar, synthetic._sessions, synthetic._daily_path, synthetic._year_grid):
            cached.cache_clear()

    clear()
    try:
        with time_machine.travel(datetime.fromisoformat(today).replace(tzinfo=UTC), tick=False):
            news = SyntheticNewsSource(seed=seed).fetch_news(list(symbols), day_window(first)[0], day_window(last)[1])
            assert news.height > 0
            assert _content_hash(news) == expected
    finally:
        clear()
