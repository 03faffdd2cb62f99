"""The offline generator: deterministic, on the calendar, and shaped like a market."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import polars as pl
import pytest
import time_machine
from polars.testing import assert_frame_equal

from lake.calendar import session_bounds, trading_days
from lake.errors import UnknownSymbolError
from lake.resample import resample_bars
from lake.sources.synthetic import SyntheticSource
from lake.validation import validate_bars

JAN, DEC = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)


def _bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def test_same_seed_same_bytes_whatever_range_was_asked() -> None:
    day = session_bounds("2024-03-15")
    alone = SyntheticSource(seed=11).fetch(["AAPL"], "1m", *day)
    week = SyntheticSource(seed=11).fetch(["AAPL"], "1m", session_bounds("2024-03-11")[0], session_bounds("2024-03-18")[1])
    assert _bytes(alone) == _bytes(week.filter((pl.col("ts") >= day[0]) & (pl.col("ts") < day[1])))
    assert _bytes(alone) != _bytes(SyntheticSource(seed=12).fetch(["AAPL"], "1m", *day))


def test_sessions_follow_the_exchange_calendar() -> None:
    bars = SyntheticSource().fetch(["MSFT"], "1m", datetime(2024, 11, 25, tzinfo=UTC), datetime(2024, 12, 3, tzinfo=UTC))
    per_day = bars.group_by(pl.col("ts").dt.convert_time_zone("America/New_York").dt.date().alias("d")).len().sort("d")
    expected = {d: 390 for d in trading_days("2024-11-25", "2024-12-02")} | {datetime(2024, 11, 29).date(): 210}
    assert dict(per_day.iter_rows()) == expected  # Thanksgiving absent, the Friday after is a half day


def test_daily_bars_are_the_sessions_of_the_minute_bars() -> None:
    source = SyntheticSource()
    daily = source.fetch(["AAPL", "JPM"], "1d", JAN, DEC)
    assert daily.height == 2 * 252
    minutes = source.fetch(["AAPL"], "1m", *session_bounds("2024-06-03"))
    one = daily.filter((pl.col("symbol") == "AAPL") & (pl.col("ts") == session_bounds("2024-06-03")[0]))
    assert_frame_equal(one, resample_bars(minutes, "1d"))


def test_generated_bars_pass_every_rule() -> None:
    bars = SyntheticSource().fetch(["AAPL", "NVDA"], "1m", *session_bounds("2024-11-29"))
    report = validate_bars(bars, timeframe="1m", engine="polars")
    assert [r.name for r in report.results if not r.passed] == []
    assert report.quarantine.is_empty() and report.clean.height == bars.height


def test_it_looks_like_a_market() -> None:
    daily = SyntheticSource().fetch(["XOM"], "1d", datetime(2015, 1, 1, tzinfo=UTC), DEC)
    gaps = (daily["open"] / daily["close"].shift(1)).log().drop_nulls()
    assert (gaps.abs() > 0.001).mean() > 0.5  # overnight gaps are the norm, not the exception
    vol = (daily["close"] / daily["close"].shift(1)).log().rolling_std(20).drop_nulls()
    assert vol.quantile(0.95) > 1.8 * vol.quantile(0.05)  # calm and stressed regimes alternate
    minutes = SyntheticSource().fetch(["XOM"], "1m", *session_bounds("2024-06-03"))
    v = minutes["volume"].to_numpy()
    assert v[:30].mean() > 2 * v[180:210].mean() and v[-30:].mean() > 2 * v[180:210].mean()  # U-shaped volume


def test_unknown_symbol_is_named() -> None:
    with pytest.raises(UnknownSymbolError, match="'not a ticker'"):
        SyntheticSource().fetch(["not a ticker"], "1m", *session_bounds("2024-06-03"))


def _content_hash(df: pl.DataFrame) -> str:
    """A digest of the values themselves (not of a file format whose metadata names a version)."""
    digest = hashlib.sha256()
    for name in df.columns:
        column = df[name]
        if column.dtype == pl.String:
            digest.update("\x00".join(column.to_list()).encode())
        elif column.dtype == pl.Datetime("us", "UTC"):
            digest.update(column.dt.epoch("us").to_numpy().astype("<i8").tobytes())
        else:
            digest.update(column.to_numpy().astype("<f8").tobytes())
    return digest.hexdigest()[:16]


# (seed, symbols, timeframe, start, end) -> digest. Pinned once; any change to these bytes is a
# change to every user's offline history and must be deliberate.
GOLDEN = [
    (7, ("AAPL", "MSFT"), "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), "f737a676df5b8931"),
    (7, ("NVDA",), "1m", datetime(2024, 11, 27, tzinfo=UTC), datetime(2024, 12, 3, tzinfo=UTC), "4e00e3c5b2650dcc"),
    (11, ("XOM",), "1d", datetime(2005, 1, 1, tzinfo=UTC), datetime(2009, 1, 1, tzinfo=UTC), "f0c604f6f44d203a"),
    (7, ("JPM",), "1m", datetime(2031, 3, 7, tzinfo=UTC), datetime(2031, 3, 12, tzinfo=UTC), "2bed79abe97511a1"),
]


def _clear_caches() -> None:
    from lake import calendar
    from lake.sources import synthetic

    for cached in (calendar.get_calendar, synthetic._sessions, synthetic._daily_path, synthetic._year_grid):
        cached.cache_clear()


@pytest.mark.parametrize(("seed", "symbols", "timeframe", "start", "end", "expected"), GOLDEN)
def test_golden_ranges_give_the_same_bytes(seed: int, symbols: tuple[str, ...], timeframe: str, start: datetime, end: datetime, expected: str) -> None:
    bars = SyntheticSource(seed=seed).fetch(list(symbols), timeframe, start, end)
    assert bars.height > 0
    assert _content_hash(bars) == expected


@pytest.mark.parametrize("today", ["2026-11-29", "2026-11-23", "2027-07-04", "2031-01-01", "2044-06-15"])
def test_the_bars_do_not_depend_on_todays_date(today: str) -> None:
    """The calendar's default end moves with today; the generator must not care."""
    _clear_caches()
    try:
        with time_machine.travel(datetime.fromisoformat(today).replace(tzinfo=UTC), tick=False):
            for seed, symbols, timeframe, start, end, expected in GOLDEN:
                assert _content_hash(SyntheticSource(seed=seed).fetch(list(symbols), timeframe, start, end)) == expected
    finally:
        _clear_caches()
