"""Multi-timeframe contexts are point in time: a frame holds only bars closed when the decision bar closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from lake.calendar import session_minutes
from lake.schema import conform_bars
from lake.store import replace_partitions
from tests.trading.always_long import ALWAYS_LONG
from trading.context import FrameView, SymbolContext, build_contexts, frames_from, read_frames
from trading.models import PortfolioSnapshot

SNAPSHOT = PortfolioSnapshot(cash=100_000.0, equity=100_000.0, start_of_day_equity=100_000.0, peak_equity=100_000.0)
MONDAY, TUESDAY = "2026-11-23", "2026-11-24"  # full sessions, 14:30-21:00 UTC


def minutes(*days: str, symbol: str = "AAPL") -> pl.DataFrame:
    """1m bars of whole sessions; each minute's close is its index (so any aggregate is traceable)."""
    ts = pl.concat([session_minutes(d) for d in days])
    price = pl.Series(range(1, ts.len() + 1), dtype=pl.Float64) + 100.0
    frame = pl.DataFrame({"symbol": symbol, "timeframe": "1m", "ts": ts, "open": price, "high": price, "low": price, "close": price, "volume": 1.0})
    return conform_bars(frame, where="test minutes")


def frame_at(bars: pl.DataFrame, as_of: datetime, needs: dict[str, int], frames: dict[str, pl.DataFrame] | None = None) -> dict[str, FrameView]:
    past = bars.filter(pl.col("ts") <= as_of)
    source = frames if frames is not None else frames_from(past, list(needs))
    [ctx], _ = build_contexts(past, ALWAYS_LONG, ALWAYS_LONG.params(), as_of, SNAPSHOT, frames=source, frame_bars=needs)
    return ctx.frames


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_sessions_daily_bar_is_absent_intraday_and_present_after_the_close() -> None:
    bars = minutes(MONDAY, TUESDAY)
    last_minute = utc(f"{TUESDAY}T20:59")  # 15:59 New York: this bar closes with the session
    intraday = frame_at(bars, last_minute - timedelta(minutes=1), {"1d": 5})["1d"]
    assert [b["ts"].date().isoformat() for b in intraday.bars] == [MONDAY]
    closing = frame_at(bars, last_minute, {"1d": 5})["1d"]
    assert [b["ts"].date().isoformat() for b in closing.bars] == [MONDAY, TUESDAY]
    assert closing.bars[-1]["close"] == bars["close"][-1]  # the whole session, none of it guessed


def test_an_hourly_frame_holds_only_hours_closed_by_the_decision_bars_close() -> None:
    bars = minutes(MONDAY, TUESDAY)
    hours = frame_at(bars, utc(f"{TUESDAY}T15:28"), {"1h": 20})["1h"]  # 10:28 NY: Tuesday's first hour still open
    assert hours.bars[-1]["ts"] == utc(f"{MONDAY}T20:30")  # Monday's short last hour (15:30-16:00 NY)
    hours = frame_at(bars, utc(f"{TUESDAY}T15:29"), {"1h": 20})["1h"]  # its last minute: the hour closes with it
    assert hours.bars[-1]["ts"] == utc(f"{TUESDAY}T14:30") and hours.bars[-1]["close"] == bars.filter(pl.col("ts") == utc(f"{TUESDAY}T15:29"))["close"][0]
    assert len(hours.bars) == 8  # Monday's seven hours and Tuesday's first, never the one in progress
    closing = frame_at(bars, utc(f"{MONDAY}T20:59"), {"1h": 20})["1h"]  # the session's short last hour closes with it
    assert closing.bars[-1]["ts"] == utc(f"{MONDAY}T20:30") and len(closing.bars) == 7


def test_a_bar_stamped_after_the_decision_time_never_reaches_the_context() -> None:
    """Whoever read the frame (a lake read can hold later bars, e.g. a replay): it is cut here."""
    bars = minutes(MONDAY, TUESDAY)
    daily = frames_from(bars, ["1d"])["1d"]  # Monday's and Tuesday's whole sessions, as the lake stores them
    tomorrow = daily.tail(1).with_columns(pl.col("ts") + timedelta(days=1), pl.lit(999.0).alias("close"))
    stored = pl.concat([daily, tomorrow])
    view = frame_at(bars, utc(f"{TUESDAY}T16:00"), {"1d": 5}, {"1d": stored})["1d"]
    assert [b["ts"].date().isoformat() for b in view.bars] == [MONDAY]
    assert all(b["close"] != 999.0 for b in view.bars)


def test_a_context_without_frame_nodes_has_no_frames_and_its_prompt_is_unchanged() -> None:
    bars = minutes(MONDAY)
    [ctx], _ = build_contexts(bars, ALWAYS_LONG, ALWAYS_LONG.params(), bars["ts"][-1], SNAPSHOT)
    assert ctx.frames == {} and "frames" not in ctx.prompt_view()


def test_daily_decisions_read_their_own_bar_in_the_daily_frame() -> None:
    """On daily bars the decision is taken after the session closed: the frame ends at the decision bar."""
    daily = frames_from(minutes(MONDAY, TUESDAY), ["1d"])["1d"]
    view = frame_at(daily, daily["ts"][-1], {"1d": 5})["1d"]
    assert view.closes == daily["close"].to_list() and "frames" in SymbolContext.model_fields


def test_a_frame_the_step_cannot_build_is_named() -> None:
    daily = frames_from(minutes(MONDAY), ["1d"])["1d"]
    with pytest.raises(ValueError, match="reads 1h bars"):
        frames_from(daily, ["1h"])


def test_a_window_cut_inside_a_bar_does_not_pass_that_partial_bar_off_as_whole() -> None:
    """A step's minute window that starts mid-hour (or mid-session) resamples its first bucket from a part."""
    bars = minutes(MONDAY, TUESDAY).filter(pl.col("ts") >= utc(f"{MONDAY}T15:00"))
    frames = frames_from(bars, ["1h", "1d"])
    assert frames["1h"]["ts"][0] == utc(f"{MONDAY}T15:30") and frames["1d"]["ts"].dt.date().to_list() == [datetime(2026, 11, 24).date()]
    whole = frames_from(minutes(MONDAY, TUESDAY), ["1h", "1d"])
    assert whole["1h"]["ts"][0] == utc(f"{MONDAY}T14:30") and whole["1d"].height == 2


def test_frames_are_read_from_the_lake_only_for_the_timeframes_asked(tmp_path: Path) -> None:
    """Stored when the lake has them, else resampled from its minutes; nothing asked, nothing opened."""
    replace_partitions(tmp_path, "bars", "1m", minutes(MONDAY, TUESDAY), period="date")
    assert read_frames(tmp_path / "no-lake-here", ["AAPL"], {}, utc(f"{TUESDAY}T22:00")) == {}
    read = read_frames(tmp_path, ["AAPL"], {"1h": 3, "1d": 2}, utc(f"{TUESDAY}T22:00"))
    assert read["1h"].height == 14 and read["1d"]["close"].to_list() == frames_from(minutes(MONDAY, TUESDAY), ["1d"])["1d"]["close"].to_list()
    stored_daily = read["1d"].with_columns(pl.col("close") * 2)
    replace_partitions(tmp_path, "bars", "1d", stored_daily, period="year")
    assert read_frames(tmp_path, ["AAPL"], {"1d": 2}, utc(f"{TUESDAY}T22:00"))["1d"]["close"].to_list() == stored_daily["close"].to_list()


def test_a_session_reads_its_frames_once_with_warm_up_before_its_first_bar(tmp_path: Path) -> None:
    days = ["2026-11-02", "2026-11-03", "2026-11-04", MONDAY, TUESDAY]
    replace_partitions(tmp_path, "bars", "1m", minutes(*days), period="date")
    one_decision = read_frames(tmp_path, ["AAPL"], {"1d": 1}, utc(f"{TUESDAY}T22:00"))["1d"]
    session = read_frames(tmp_path, ["AAPL"], {"1d": 1}, utc(f"{TUESDAY}T22:00"), first=utc("2026-11-13T14:30"))["1d"]
    assert one_decision["ts"].dt.date().to_list() == [datetime(2026, 11, d).date() for d in (23, 24)]  # 11 days back
    assert session.height == 5  # 11 days before the session's first bar: the early November days too
