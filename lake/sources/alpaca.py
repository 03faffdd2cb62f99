"""Alpaca market data through the real `alpaca-py` client (`StockHistoricalDataClient`).

What the lake needs from Alpaca differs from what Alpaca returns in three ways, handled here:
- Alpaca returns extended-hours bars; the lake holds regular-session bars only. They are passed on
  (every row read is written or quarantined with a reason, never dropped here), and the source says
  so (`extended_hours = True`): validation with `extended_hours=True` quarantines them under the
  warning `extended_hours` rather than failing the blocking `in_session`. Hourly bars are the one
  exception: they are built from the session's minutes only (an extended-hours minute is in no hour).
- Alpaca stamps daily bars at midnight New York time and filters a request by bar time, so a daily
  request is widened to midnight New York of its first day (asking from the session open would miss
  that day's bar); the lake stamps daily bars at the session open.
- Alpaca's hourly bars sit on the clock hour (09:00, 10:00); the lake's hours are open-anchored
  (09:30, 10:30), so `1h` is built from 1-minute bars by the one resampler.

Failures raise `SourceError` naming Alpaca, the symbols, the timeframe and the status: never a
partial frame, never a key. Timeouts, lost connections and HTTP 429/5xx (after the client's own
retries) are `TransientSourceError`, worth a later retry; anything else is an answer that asking
again would not change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from lake.calendar import restamp_daily, sessions_frame, start_of_local_day
from lake.errors import BarSchemaError, SourceError, TransientSourceError, UnknownSymbolError
from lake.http import install_timeout
from lake.schema import check_timeframe, conform_bars, empty_bars

# Timeframes Alpaca serves in the lake's own alignment; 1h is resampled from 1m (see module doc).
_NATIVE: dict[str, TimeFrame] = {
    "1m": TimeFrame(1, TimeFrameUnit.Minute),
    "5m": TimeFrame(5, TimeFrameUnit.Minute),
    "15m": TimeFrame(15, TimeFrameUnit.Minute),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}
# Alpaca's short keys -> bar schema columns.
_COLUMNS = {"t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap", "n": "trade_count"}


class AlpacaSource:
    """Historical stock bars from Alpaca (`feed` iex for free accounts, sip with a subscription)."""

    name = "alpaca"
    extended_hours = True  # sends pre-market and after-hours bars: validate with extended_hours=True

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        feed: str = "iex",
        adjustment: str = "raw",
        url_override: str | None = None,
        exchange: str = "XNYS",
        retry_attempts: int = 3,
        retry_wait: float = 3.0,
        timeout_s: float = 30.0,
    ) -> None:
        if not (api_key and secret_key):
            raise SourceError("alpaca: api_key and secret_key are both required")
        try:
            self.feed = DataFeed(feed.lower())
        except ValueError:
            raise SourceError(f"alpaca: unknown feed {feed!r}; expected one of {[f.value for f in DataFeed]}") from None
        try:
            self.adjustment = Adjustment(adjustment.lower())
        except ValueError:
            choices = [a.value for a in Adjustment]
            raise SourceError(f"alpaca: unknown adjustment {adjustment!r}; expected one of {choices}") from None
        self.exchange = exchange
        # raw_data: plain dicts, so bars go straight into polars without alpaca's pydantic models.
        self._client = StockHistoricalDataClient(api_key, secret_key, raw_data=True, url_override=url_override)
        # The client retries 429/504 itself; these knobs are private attributes in alpaca-py 0.44.
        self._client._retry = retry_attempts
        self._client._retry_wait = retry_wait  # type: ignore[assignment]  # alpaca-py types it int
        install_timeout(self._client._session, timeout_s)  # alpaca-py sets none: a silent server would hang the run

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        check_timeframe(timeframe)
        if start.tzinfo is None or end.tzinfo is None:
            raise SourceError("alpaca: start and end must be timezone-aware")
        wanted = sorted({s.upper() for s in symbols})
        if not wanted or start >= end:
            return empty_bars()
        native = "1m" if timeframe == "1h" else timeframe
        # Alpaca's convention: a daily bar is stamped 00:00 New York, and the request filters by that stamp.
        asked_from = start_of_local_day(start) if native == "1d" else start
        raw = self._request(wanted, native, asked_from, end)
        missing = [s for s in wanted if not raw.get(s)]
        if missing and len(missing) < len(wanted):
            # Others traded in the window, so these are unknown to Alpaca (or absent from this feed).
            raise UnknownSymbolError(
                f"alpaca: no {native} bars for {missing} between {start.isoformat()} and {end.isoformat()} "
                f"while {sorted(set(wanted) - set(missing))} have some; unknown symbol or not on feed {self.feed.value!r}"
            )
        bars = _to_frame(raw, native, wanted)
        if native == "1d":
            bars = restamp_daily(bars, self.exchange)
        if timeframe == "1h":
            from lake.resample import resample_bars  # the one definition of coarser bars

            bars = resample_bars(self._regular_session(bars, start, end), "1h")
        return bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).sort("symbol", "ts")

    def _request(self, symbols: list[str], timeframe: str, start: datetime, end: datetime) -> dict[str, Any]:
        where = f"alpaca {timeframe} bars for {symbols}"
        request = StockBarsRequest(
            symbol_or_symbols=symbols,
            timeframe=_NATIVE[timeframe],
            start=start,
            end=end,
            feed=self.feed,
            adjustment=self.adjustment,
        )
        try:
            raw = self._client.get_stock_bars(request)
        except APIError as exc:
            status = exc.status_code if exc.response is not None else None
            error = TransientSourceError if status is None or status == 429 or status >= 500 else SourceError
            raise error(f"{where}: HTTP {status or '?'}: {_api_message(exc)}") from None
        except json.JSONDecodeError as exc:  # an undecodable body (requests' subclass is an OSError too)
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from None
        except OSError as exc:  # timeouts and connection errors (requests' exceptions are OSErrors)
            raise TransientSourceError(f"{where}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from None
        if not isinstance(raw, dict):
            raise SourceError(f"{where}: expected a JSON object of bars per symbol, got {type(raw).__name__}")
        return raw

    def _regular_session(self, bars: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
        if bars.is_empty():
            return bars
        sessions = sessions_frame(start.date(), end.date(), self.exchange).rename({"open": "s_open", "close": "s_close"})
        with_day = bars.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.date().alias("date"))
        return (
            with_day.join(sessions, on="date", how="inner")
            .filter((pl.col("ts") >= pl.col("s_open")) & (pl.col("ts") < pl.col("s_close")))
            .select(bars.columns)
        )


def _to_frame(raw: dict[str, Any], timeframe: str, symbols: list[str]) -> pl.DataFrame:
    frames = []
    for symbol in symbols:
        rows = raw.get(symbol) or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise SourceError(f"alpaca {timeframe} bars for {symbol}: expected a list of bar objects")
        if not rows:
            continue
        absent = sorted({"t", "o", "h", "l", "c", "v"} - set(rows[0]))
        if absent:
            raise SourceError(f"alpaca {timeframe} bars for {symbol}: bar objects lack keys {absent}")
        try:
            df = pl.DataFrame(rows, infer_schema_length=None).rename(_COLUMNS, strict=False)
            df = df.with_columns(
                pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us"),
                pl.lit(symbol).alias("symbol"),
                pl.lit(timeframe).alias("timeframe"),
            )
            frames.append(conform_bars(df, where=f"alpaca {timeframe} {symbol}"))
        except (pl.exceptions.PolarsError, BarSchemaError) as exc:
            raise SourceError(f"alpaca {timeframe} bars for {symbol}: malformed bars: {exc}") from None
    return pl.concat(frames) if frames else empty_bars()


def _api_message(exc: APIError) -> str:
    """Alpaca's own error message without echoing request headers (which carry the keys)."""
    try:
        return str(json.loads(str(exc)).get("message", exc))
    except (ValueError, AttributeError):
        return str(exc)[:200]
