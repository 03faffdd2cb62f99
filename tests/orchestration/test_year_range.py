"""bars_1d's request window (`_year_range`) from one table of session closes per year: the same
window as looking each session up, without a calendar lookup per session."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from assets import bars
from lake.calendar import session_bounds, trading_days, year_window
from lake.errors import SourceError


def _per_session(first: str, last: str, exchange: str, now: datetime) -> tuple[datetime, datetime]:
    """The window as it was computed before: every session of `last` looked up on its own."""
    days = trading_days(date(int(last), 1, 1), date(int(last), 12, 31), exchange)
    closed = [d for d in days if session_bounds(d, exchange)[1] <= now]
    if not closed:
        raise SourceError(f"no closed {exchange} session in {last} yet")
    year_end = year_window(int(last))[1]
    return year_window(int(first))[0], year_end if now >= year_end else session_bounds(closed[-1], exchange)[1]


_CLOSE_BLACK_FRIDAY = session_bounds("2026-11-27", "XNYS")[1]  # a half day: 13:00 New York
NOWS = [
    datetime(2026, 1, 2, 21, 0, tzinfo=UTC),  # the year's first close, exactly
    datetime(2026, 1, 5, 14, 0, tzinfo=UTC),  # a session in progress: ends at the one before
    datetime(2026, 7, 3, 12, 0, tzinfo=UTC),  # a holiday (observed Independence Day)
    _CLOSE_BLACK_FRIDAY - timedelta(microseconds=1),
    _CLOSE_BLACK_FRIDAY,
    datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
    year_window(2026)[1],
    datetime(2027, 3, 1, tzinfo=UTC),  # the year is over: the end of its window
]


@pytest.mark.parametrize("now", NOWS, ids=[n.isoformat() for n in NOWS])
@pytest.mark.parametrize("first", ["2024", "2026"])
def test_the_same_window_as_session_by_session(first: str, now: datetime) -> None:
    assert bars._year_range(first, "2026", "XNYS", now) == _per_session(first, "2026", "XNYS", now)


def test_no_closed_session_yet_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="no closed XNYS session in 2026 yet"):
        bars._year_range("2026", "2026", "XNYS", datetime(2026, 1, 2, 20, 59, tzinfo=UTC))


def test_no_calendar_lookup_per_session(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[tuple[object, ...]] = []

    def counted(*args: str) -> tuple[datetime, datetime]:
        looked_up.append(args)
        return session_bounds(*args)

    monkeypatch.setattr(bars, "session_bounds", counted)
    bars._year_range("2026", "2026", "XNYS", datetime(2026, 11, 30, 15, 0, tzinfo=UTC))
    bars._year_range("2025", "2025", "XNYS", datetime(2026, 11, 30, 15, 0, tzinfo=UTC))
    assert looked_up == []
