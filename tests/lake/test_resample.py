"""Resampling matches a direct, row-by-row aggregation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from lake.calendar import session_bounds
from lake.resample import resample_bars
from lake.sources.synthetic import SyntheticSource


def _direct(minutes: pl.DataFrame, timeframe: str) -> list[tuple[object, ...]]:
    """Buckets by hand: walk each session from its open in steps of the timeframe."""
    out = []
    for (symbol,), rows in minutes.sort("ts").group_by(["symbol"], maintain_order=True):
        for day in rows["ts"].dt.convert_time_zone("America/New_York").dt.date().unique(maintain_order=True):
            open_, close = session_bounds(day)
            step = close - open_ if timeframe == "1d" else {"5m": 5, "15m": 15, "1h": 60}[timeframe] * timedelta(minutes=1)
            t = open_
            while t < close:
                chunk = rows.filter((pl.col("ts") >= t) & (pl.col("ts") < t + step))
                if chunk.height:
                    out.append(
                        (symbol, t, chunk["open"][0], chunk["high"].max(), chunk["low"].min(), chunk["close"][-1], chunk["volume"].sum())
                    )
                t += step
    return out


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "1d"])
def test_resample_matches_direct_aggregation(timeframe: str) -> None:
    # A full day and the half day after Thanksgiving, two symbols.
    minutes = SyntheticSource().fetch(["AAPL", "MSFT"], "1m", datetime(2024, 11, 27, tzinfo=UTC), datetime(2024, 11, 30, tzinfo=UTC))
    got = resample_bars(minutes, timeframe)  # type: ignore[arg-type]
    rows = got.select("symbol", "ts", "open", "high", "low", "close", "volume").rows()
    assert rows == _direct(minutes, timeframe)
    assert set(got["timeframe"]) == {timeframe}
    vw = (minutes["vwap"] * minutes["volume"]).sum() / minutes["volume"].sum()
    assert (got["vwap"] * got["volume"]).sum() / got["volume"].sum() == pytest.approx(vw)
    assert got["trade_count"].sum() == minutes["trade_count"].sum()


def test_hours_start_at_the_open_and_the_half_day_ends_early() -> None:
    minutes = SyntheticSource().fetch(["AAPL"], "1m", *session_bounds("2024-11-29"))
    hours = resample_bars(minutes, "1h")
    local = hours["ts"].dt.convert_time_zone("America/New_York").dt.strftime("%H:%M").to_list()
    assert local == ["09:30", "10:30", "11:30", "12:30"]
