"""A seeded offline market: exchange sessions, volatility regimes, overnight gaps, U-shaped volume.

Determinism is per (seed, symbol, year): a year's minute grid and its daily draws come from their
own random streams, so the bars of a day never depend on the range asked for, nor on how far the
exchange calendar reaches (which moves with today's date). Same seed, same bytes, on any day.

The daily path (regimes, gaps, the day's open-to-close move) is chained over the years so prices
are continuous; each day's minutes are a Brownian bridge
from that day's open to its close with more variance at the open and the close.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache

import numpy as np
import polars as pl

from lake.calendar import get_calendar
from lake.errors import SourceError, UnknownSymbolError
from lake.schema import check_timeframe, conform_bars, empty_bars

MAX_SESSION_MINUTES = 390
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")

# Regimes: daily volatility, and the chance to stay in the regime each day.
_REGIME_VOL = np.array([0.010, 0.028])
_REGIME_STAY = np.array([0.985, 0.94])
_GAP_SHARE = 0.3  # share of daily variance that happens overnight
_SLOTS = 366  # daily draws per calendar year: one slot per session, more than any year has


def _stable_int(*parts: object) -> int:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _check_symbol(symbol: str) -> str:
    if not _SYMBOL_RE.match(symbol):
        raise UnknownSymbolError(f"synthetic: unknown symbol {symbol!r} (expected an upper-case ticker like 'AAPL')")
    return symbol


@lru_cache(maxsize=8)
def _sessions(exchange: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All sessions of the calendar: dates (datetime64[D]), opens and closes (datetime64[us], UTC)."""
    schedule = get_calendar(exchange).schedule
    days = schedule.index.values.astype("datetime64[D]")
    opens = schedule["open"].dt.tz_convert("UTC").dt.tz_localize(None).values.astype("datetime64[us]")
    closes = schedule["close"].dt.tz_convert("UTC").dt.tz_localize(None).values.astype("datetime64[us]")
    return days, opens, closes


@lru_cache(maxsize=256)
def _daily_path(seed: int, symbol: str, exchange: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per session: open price, close price, and the regime's volatility multiplier for volume.

    Each calendar year draws a fixed block of `_SLOTS` numbers from its own stream and session k of
    the year takes slot k, so a session's draws never depend on how far the calendar reaches: the
    path up to any day is the same bytes whatever today's date is.
    """
    days, _, _ = _sessions(exchange)
    n = len(days)
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    slot = np.arange(n) - np.searchsorted(years, years, side="left")
    stay, gap_draw, move_draw = np.empty(n), np.empty(n), np.empty(n)
    for year in np.unique(years).tolist():
        rng = np.random.default_rng(_stable_int("daily", seed, symbol, exchange, year))
        block = rng.random(_SLOTS), rng.standard_normal(_SLOTS), rng.standard_normal(_SLOTS)
        in_year = years == year
        for out, draws in zip((stay, gap_draw, move_draw), block, strict=True):
            out[in_year] = draws[slot[in_year]]
    regime = np.empty(n, dtype=np.int8)
    state = 0
    for i in range(n):  # a two-state Markov chain; n is ~11k, cheap once per symbol
        if stay[i] > _REGIME_STAY[state]:
            state = 1 - state
        regime[i] = state
    vol = _REGIME_VOL[regime]
    drift = np.random.default_rng(_stable_int("drift", seed, symbol, exchange)).normal(0.0002, 0.0001)
    gaps = gap_draw * vol * np.sqrt(_GAP_SHARE)
    moves = drift + move_draw * vol * np.sqrt(1 - _GAP_SHARE)
    start_price = 20.0 + (_stable_int("price", symbol) % 48000) / 100.0
    log_close = np.log(start_price) + np.cumsum(gaps + moves)  # sequential: day t depends on days <= t only
    log_open = log_close - moves
    return np.exp(log_open), np.exp(log_close), vol / _REGIME_VOL[0]


def _u_curve(n: int, low: float) -> np.ndarray:
    """Weights over the minutes of a session: high at the open and the close, `low` at midday."""
    x = np.linspace(-1.0, 1.0, n)
    return low + (1.0 - low) * x**2


@dataclass(frozen=True)
class _YearGrid:
    """One symbol-year of minute bars on a (sessions x 390) grid; `valid` masks half-day tails."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    trade_count: np.ndarray
    valid: np.ndarray


@lru_cache(maxsize=64)
def _year_grid(seed: int, symbol: str, year: int, exchange: str) -> _YearGrid:
    days, opens, closes = _sessions(exchange)
    in_year = (days >= np.datetime64(f"{year}-01-01")) & (days < np.datetime64(f"{year + 1}-01-01"))
    idx = np.flatnonzero(in_year)
    day_open, day_close, vol_mult = (a[idx] for a in _daily_path(seed, symbol, exchange))
    n_days, m = len(idx), MAX_SESSION_MINUTES
    minutes = ((closes[idx] - opens[idx]) // np.timedelta64(1, "m")).astype(np.int64)
    k = np.arange(m)
    valid = k[None, :] < minutes[:, None]

    rng = np.random.default_rng(_stable_int("minutes", seed, symbol, year, exchange))
    shape = np.sqrt(_u_curve(m, 0.35))
    steps = rng.standard_normal((n_days, m)) * shape[None, :] * valid
    walk = np.cumsum(steps, axis=1)
    n_valid = np.maximum(minutes, 1)[:, None]
    frac = np.minimum(k[None, :] + 1, n_valid) / n_valid
    bridge = walk - frac * np.take_along_axis(walk, (n_valid - 1).astype(np.int64), axis=1)
    move = np.log(day_close / day_open)[:, None]
    sigma = (0.012 * vol_mult / np.sqrt(m))[:, None]
    log_close = np.log(day_open)[:, None] + frac * move + sigma * bridge
    close = np.exp(log_close)
    open_ = np.concatenate([day_open[:, None], close[:, :-1]], axis=1)
    wick = np.abs(rng.standard_normal((2, n_days, m))) * sigma * 0.6
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    # Rounding is monotone, so it keeps low <= open, close <= high.
    open_, high, low, close = (np.round(a, 2) for a in (open_, high, low, close))

    base_volume = 2_000 + _stable_int("volume", symbol) % 20_000
    volume = np.round(base_volume * _u_curve(m, 0.25)[None, :] * vol_mult[:, None] * rng.lognormal(0.0, 0.35, (n_days, m)))
    vwap = np.round((high + low + close) / 3.0, 4)
    trade_count = np.maximum(1, volume // 90).astype(np.int64)
    ts = opens[idx][:, None] + k[None, :].astype("timedelta64[m]")
    return _YearGrid(ts, open_, high, low, close, volume, vwap, trade_count, valid)


class SyntheticSource:
    """The offline default: any upper-case ticker has a plausible, reproducible history."""

    name = "synthetic"

    def __init__(self, seed: int = 7, exchange: str = "XNYS") -> None:
        self.seed = seed
        self.exchange = exchange

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        check_timeframe(timeframe)
        if start.tzinfo is None or end.tzinfo is None:
            raise SourceError("synthetic: start and end must be timezone-aware")
        frames = [self._minutes(_check_symbol(s), start, end) for s in symbols]
        minutes = pl.concat(frames) if frames else empty_bars()
        if timeframe == "1m":
            return minutes
        from lake.resample import resample_bars  # resampling is the one definition of coarser bars

        return resample_bars(minutes, timeframe)  # type: ignore[arg-type]  # checked above

    def _minutes(self, symbol: str, start: datetime, end: datetime) -> pl.DataFrame:
        lo = np.datetime64(_naive_utc(start), "us")
        hi = np.datetime64(_naive_utc(end), "us")
        days, opens, closes = _sessions(self.exchange)
        touched = days[(closes > lo) & (opens < hi)]  # only the years that hold a wanted session
        if len(touched) == 0:
            return empty_bars()
        first, last = (touched[[0, -1]].astype("datetime64[Y]").astype(int) + 1970).tolist()
        parts = []
        for year in range(first, last + 1):
            grid = _year_grid(self.seed, symbol, year, self.exchange)
            keep = grid.valid & (grid.ts >= lo) & (grid.ts < hi)
            if not keep.any():
                continue
            parts.append(
                pl.DataFrame(
                    {
                        "ts": pl.Series(grid.ts[keep]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
                        "open": grid.open[keep],
                        "high": grid.high[keep],
                        "low": grid.low[keep],
                        "close": grid.close[keep],
                        "volume": grid.volume[keep],
                        "vwap": grid.vwap[keep],
                        "trade_count": grid.trade_count[keep],
                    }
                )
            )
        if not parts:
            return empty_bars()
        df = pl.concat(parts).with_columns(pl.lit(symbol).alias("symbol"), pl.lit("1m").alias("timeframe"))
        return conform_bars(df, where=f"synthetic {symbol}")


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def session_prices(seed: int, symbol: str, day: date, exchange: str = "XNYS") -> tuple[float | None, float, float]:
    """(previous session's close or None for the calendar's first, open, close) of `day`'s session
    for this seed and symbol, rounded as the bars are: the offline news generator ties its headlines'
    tone to these. Raises SourceError when `day` is no session."""
    days, _, _ = _sessions(exchange)
    i = int(np.searchsorted(days, np.datetime64(day, "D")))
    if i >= len(days) or days[i] != np.datetime64(day, "D"):
        raise SourceError(f"synthetic: {day} is not a {exchange} session")
    opens, closes, _ = _daily_path(seed, _check_symbol(symbol), exchange)
    previous = round(float(closes[i - 1]), 2) if i > 0 else None
    return previous, round(float(opens[i]), 2), round(float(closes[i]), 2)
