"""The screener: which symbols of the universe the next decisions look at, from daily bars.

Point in time: screening day D uses only the daily bars of sessions before D (their closes are known
before D opens); a bar of D or later never counts. The gap filter compares D's open with the prior
close, so it needs D's open, which the caller passes only when it existed at the decision time.

Filters (each off by default, so the default rules keep every symbol that has bars):
- liquidity: average close * volume over the last `lookback` sessions >= min_dollar_volume;
- price: min_price <= last close <= max_price;
- gap: |open(D) / close(D-1) - 1| <= max_gap;
- momentum: close(D-1) / close(D-1-lookback) - 1 >= min_momentum.
The score is the momentum (0.0 without enough history); max_symbols keeps the best scores.

Screens live in the lake (a local folder or an object store's prefix): <root>/screener/date=D/part.parquet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import overload

import polars as pl

from lake.calendar import DEFAULT_EXCHANGE, get_calendar
from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.store import scan_files, write_frame_atomic

SCREENER = "screener"
PART_FILE = "part.parquet"
EPS = 1e-12  # ratios of prices are inexact: 102 / 100 - 1 > 0.02; boundaries are inclusive
SCREEN_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "chosen": pl.Boolean(),
    "score": pl.Float64(),
    "last_close": pl.Float64(),
    "avg_dollar_volume": pl.Float64(),
    "momentum": pl.Float64(),
    "gap": pl.Float64(),
    "reason": pl.String(),
}


@dataclass(frozen=True)
class ScreenerRules:
    lookback: int = 20
    min_dollar_volume: float = 0.0
    min_price: float = 0.0
    max_price: float = math.inf
    max_gap: float | None = None
    min_momentum: float | None = None
    max_symbols: int | None = None

    def __post_init__(self) -> None:
        if self.lookback < 1:
            raise ValueError(f"screener: lookback must be >= 1, got {self.lookback}")
        if self.min_price > self.max_price:
            raise ValueError(f"screener: min_price {self.min_price} is above max_price {self.max_price}")
        if self.max_symbols is not None and self.max_symbols < 1:
            raise ValueError(f"screener: max_symbols must be >= 1, got {self.max_symbols}")


def _before(day: date, exchange: str) -> datetime:
    """Local midnight of `day`: daily bars are stamped at their session's open, so ts < this = sessions before `day`."""
    return datetime.combine(day, time(0), tzinfo=get_calendar(exchange).tz).astimezone(UTC)


def screen(
    bars: pl.DataFrame,
    symbols: Sequence[str],
    day: date,
    rules: ScreenerRules,
    opens: Mapping[str, float] | None = None,
    exchange: str = DEFAULT_EXCHANGE,
) -> pl.DataFrame:
    """One row per symbol (SCREEN_SCHEMA), sorted chosen first then by score: why each was kept or not.

    `bars`: daily bars (any range; rows of `day` and later are dropped here). `opens`: the day's
    opens known at the decision time, used only by the gap filter."""
    past = bars.filter(pl.col("ts") < _before(day, exchange)).sort("symbol", "ts")
    rows: list[dict[str, object]] = []
    for symbol in sorted(dict.fromkeys(symbols)):
        hist = past.filter(pl.col("symbol") == symbol)
        row: dict[str, object] = {"symbol": symbol, "chosen": False, "score": 0.0, "last_close": None,
                                  "avg_dollar_volume": None, "momentum": None, "gap": None, "reason": None}
        rows.append(row)
        if hist.is_empty():
            row["reason"] = "no daily bars before the day"
            continue
        closes = hist["close"].to_list()
        recent = hist.tail(rules.lookback)
        last = float(closes[-1])
        row["last_close"] = last
        row["avg_dollar_volume"] = float((recent["close"] * recent["volume"]).mean())  # type: ignore[arg-type]
        if len(closes) > rules.lookback:
            row["momentum"] = row["score"] = last / float(closes[-1 - rules.lookback]) - 1.0
        if opens is not None and symbol in opens:
            row["gap"] = float(opens[symbol]) / last - 1.0
        row["reason"] = _rejection(row, rules)
    frame = pl.DataFrame(rows, schema=SCREEN_SCHEMA, orient="row")
    frame = frame.with_columns(chosen=pl.col("reason").is_null())
    if rules.max_symbols is not None:
        ranked = frame.filter("chosen").sort("score", "symbol", descending=[True, False])
        cut = set(ranked["symbol"][rules.max_symbols :].to_list())
        frame = frame.with_columns(
            reason=pl.when(pl.col("symbol").is_in(list(cut))).then(pl.lit(f"rank: beyond the top {rules.max_symbols} scores")).otherwise("reason")
        ).with_columns(chosen=pl.col("reason").is_null())
    return frame.sort(["chosen", "score", "symbol"], descending=[True, True, False])


def _rejection(row: Mapping[str, object], rules: ScreenerRules) -> str | None:
    """The first filter the symbol fails, in words; None when it passes them all."""
    adv, last = float(row["avg_dollar_volume"]), float(row["last_close"])  # type: ignore[arg-type]
    if adv < rules.min_dollar_volume:
        return f"liquidity: avg dollar volume {adv:,.0f} < {rules.min_dollar_volume:,.0f}"
    if last < rules.min_price:
        return f"price: {last:.2f} < {rules.min_price:.2f}"
    if last > rules.max_price:
        return f"price: {last:.2f} > {rules.max_price:.2f}"
    if rules.max_gap is not None:
        gap = row["gap"]
        if gap is None:
            return "gap: no open of the day at the decision time"
        if abs(float(gap)) > rules.max_gap + EPS:  # type: ignore[arg-type]
            return f"gap: {float(gap):+.2%} beyond ±{rules.max_gap:.2%}"  # type: ignore[arg-type]
    if rules.min_momentum is not None:
        momentum = row["momentum"]
        if momentum is None:
            return f"momentum: fewer than {rules.lookback + 1} sessions of history"
        if float(momentum) < rules.min_momentum - EPS:  # type: ignore[arg-type]
            return f"momentum: {float(momentum):+.2%} < {rules.min_momentum:+.2%}"  # type: ignore[arg-type]
    return None


@overload
def screener_path(root: Path, day: date | str) -> Path: ...
@overload
def screener_path(root: ObjectPath, day: date | str) -> ObjectPath: ...
def screener_path(root: Path | ObjectPath, day: date | str) -> Path | ObjectPath:
    return (root if isinstance(root, ObjectPath) else Path(root)) / SCREENER / f"date={day}" / PART_FILE


def write_screen(root: Path | ObjectPath, day: date | str, frame: pl.DataFrame) -> Path | ObjectPath:
    """Replaces the day's screen (temp file + rename: a reader sees the old file or the new one)."""
    return write_frame_atomic(frame.select(list(SCREEN_SCHEMA)), screener_path(root, day))


def chosen_symbols(root: Path | ObjectPath, day: date | str) -> list[str]:
    """The symbols the day's screen chose (sorted); LakeError when the day has no screen."""
    path = screener_path(root, day)
    if not path.is_file():
        raise LakeError(f"screener: no output for {day} ({path}); materialize the screener asset for that day first")
    return sorted(scan_files([path]).filter("chosen").collect()["symbol"].to_list())
