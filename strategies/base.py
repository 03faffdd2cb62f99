"""What a strategy is: typed parameters, the bars it needs, and one vectorized signal function.

`signals(bars, params)` takes bars of one or more symbols (sorted by symbol, ts) and returns them
with the signal columns below. Row t may use rows <= t of its symbol (and, for cross-sectional
strategies, other symbols' rows at the same or earlier ts) and nothing later: the backtest fills a
signal at t no earlier than bar t+1, and the live path reads the last row of a trailing window.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import polars as pl
from pydantic import BaseModel, ConfigDict

# Booleans: act at the next bar. size: fraction of available cash to commit on an entry.
# stop/target1/target2: price levels for a bracket (null = none).
SIGNAL_COLUMNS: dict[str, pl.DataType] = {
    "entry_long": pl.Boolean(),
    "exit_long": pl.Boolean(),
    "entry_short": pl.Boolean(),
    "exit_short": pl.Boolean(),
    "size": pl.Float64(),
    "stop": pl.Float64(),
    "target1": pl.Float64(),
    "target2": pl.Float64(),
}


class StrategyError(ValueError):
    """A strategy got bars or parameters it cannot work with; the message names which."""


class StrategyParams(BaseModel):
    """Frozen, validated parameters. Give fields `json_schema_extra={"sweep": [lo, hi, step]}` to
    declare the range a sweep explores; bounds (`ge`, `le`) reject bad values at construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def sweep_ranges(cls) -> dict[str, list[Any]]:
        ranges: dict[str, list[Any]] = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if "sweep" in extra:
                lo, hi, step = cast(tuple[float, float, float], extra["sweep"])
                values: list[Any] = []
                v = lo
                while v <= hi + 1e-12:
                    values.append(v)
                    v += step
                ranges[name] = values
        return ranges

    @classmethod
    def grid(cls, **overrides: list[Any]) -> Iterator[Any]:
        """Every valid combination of the sweep ranges (overridable); invalid ones are skipped."""
        ranges = cls.sweep_ranges() | overrides
        names = list(ranges)
        for combo in itertools.product(*(ranges[n] for n in names)):
            try:
                yield cls(**dict(zip(names, combo, strict=True)))
            except ValueError:
                continue  # e.g. fast >= slow: not a strategy, not an error


P = TypeVar("P", bound=StrategyParams)


@dataclass(frozen=True)
class MovingAverageCross:
    """A declaration that a strategy's signals have one well-known shape, so a sweep may use a fused
    kernel for it (the backtests layer interprets this; nothing here runs it).

    For one symbol: `entry_long` where `average(params.<fast>)` crosses above `average(params.<slow>)`
    (`crossed_above`), `exit_long` where it crosses back below (`crossed_below`); when
    `params.<short>` is true, `entry_short`/`exit_short` are the mirror, otherwise no short signals;
    `size` depends on neither window; no bracket levels. Any other parameter field must only affect
    `size` (the sweep checks which fields it can honour and falls back to the generic path otherwise).
    """

    average: Callable[[int], pl.Expr]
    fast: str = "fast"
    slow: str = "slow"
    short: str = "allow_short"


@dataclass(frozen=True)
class ThresholdCross:
    """A declaration that a strategy's signals are one indicator crossing fixed levels (RSI mean
    reversion), so a sweep may use a fused kernel for it (the backtests layer interprets this).

    For one symbol, with x = `indicator(params.<window>)`: `entry_long` where x crosses below
    `params.<lower>` (`crossed_below`), `exit_long` where it crosses above `params.<exit>`
    (`crossed_above`); when `params.<short>` is true, `entry_short` where x crosses above
    `params.<upper>` and `exit_short` where it crosses below `params.<exit>`, otherwise no short
    signals; `size` depends on none of these fields; no bracket levels. Any other parameter field
    must only affect `size`.
    """

    indicator: Callable[[int], pl.Expr]
    window: str = "period"
    lower: str = "lower"
    upper: str = "upper"
    exit: str = "exit_level"
    short: str = "allow_short"


@dataclass(frozen=True)
class ChannelBreakout:
    """A declaration that a strategy's signals are channel breakouts with ATR bracket levels
    (Donchian), so a sweep may use a fused kernel for it (the backtests layer interprets this).

    For one symbol, with c the close, hi(w) = `upper(w)` and lo(w) = `lower(w)` (the channel of the
    w bars before this one): `entry_long` where c > hi(params.<entry>), `exit_long` where
    c < lo(params.<exit>); when `params.<short>` is true, `entry_short` where c < lo(params.<entry>)
    and `exit_short` where c > hi(params.<exit>), otherwise no short signals. `stop`, `target1`,
    `target2` are c - side x params.<stop> x atr, c + side x params.<target1> x atr and
    c + side x params.<target2> x atr, with atr = `atr(params.<atr_period>)` and side -1 where
    shorts are on and the bar breaks down without breaking up, else 1. `size` depends on none of
    the channel and level fields. Any other parameter field must only affect `size`.
    """

    upper: Callable[[int], pl.Expr]
    lower: Callable[[int], pl.Expr]
    atr: Callable[[int], pl.Expr]
    entry: str = "entry_window"
    exit: str = "exit_window"
    stop: str = "stop_atr"
    target1: str = "target1_atr"
    target2: str = "target2_atr"
    atr_period: str = "atr_period"
    short: str = "allow_short"


@dataclass(frozen=True)
class CrossSectionalRank:
    """A declaration that a strategy holds the top of a cross-sectional ranking, each position sized
    to a volatility target (cross-sectional momentum), so a sweep may run a compiled multi-symbol
    kernel for it (the backtests layer interprets this).

    Per symbol, score = `score(params.<lookback>, params.<skip>)` and vol = `volatility(params.<vol_window>)`
    (each used with `.over("symbol")`). At each bar the symbols are ranked by `rank_across(score)`
    and in_top is rank <= params.<top_k> (no score: not in). `entry_long` where in_top and the
    symbol was not in_top on the bar before (none before the first bar), `exit_long` the reverse;
    no short signals; `size` = min(params.<vol_target> / vol / params.<top_k>, params.<max_weight>)
    where vol > 0, else null; no bracket levels. Fields named in `inert` change no signal (momentum's
    `allow_short`: it is long-only); any other parameter field must be one of the above.
    """

    score: Callable[[int, int], pl.Expr]
    volatility: Callable[[int], pl.Expr]
    lookback: str = "lookback"
    skip: str = "skip"
    top_k: str = "top_k"
    vol_window: str = "vol_window"
    vol_target: str = "vol_target"
    max_weight: str = "max_weight"
    inert: tuple[str, ...] = ()


# The shapes a strategy can declare.
FastPath = MovingAverageCross | ThresholdCross | ChannelBreakout | CrossSectionalRank


@dataclass(frozen=True)
class Strategy(Generic[P]):
    """A named strategy: its parameter model, its bar needs and its signal function. `fast_path`
    optionally declares the signals' shape (see `MovingAverageCross`) so sweeps can fuse them."""

    name: str
    params_model: type[P]
    compute: Callable[[pl.DataFrame, P], pl.DataFrame]
    lookback: Callable[[P], int]
    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h", "1d")
    cross_sectional: bool = False
    description: str = ""
    fast_path: FastPath | None = None

    def params(self, **values: Any) -> P:
        try:
            return self.params_model(**values)
        except ValueError as exc:
            raise StrategyError(f"{self.name}: invalid parameters {values}: {exc}") from exc

    def signals(self, bars: pl.DataFrame, params: P) -> pl.DataFrame:
        """Bars plus the signal columns, sorted by symbol and ts."""
        check_bars(bars, self.name)
        out = self.compute(bars if sorted_by_symbol_ts(bars) else bars.sort("symbol", "ts"), params)
        missing = [c for c in SIGNAL_COLUMNS if c not in out.columns]
        if missing:
            raise StrategyError(f"{self.name}: signal function did not produce {missing}")
        return out.with_columns(
            *(pl.col(c).fill_null(False).cast(pl.Boolean) for c in ("entry_long", "exit_long", "entry_short", "exit_short")),
            *(pl.col(c).cast(pl.Float64) for c in ("size", "stop", "target1", "target2")),
        )


def check_bars(bars: pl.DataFrame, who: str) -> None:
    if bars.is_empty():
        raise StrategyError(f"{who}: no bars (empty range or unknown symbol?)")
    missing = [c for c in ("symbol", "ts", "open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise StrategyError(f"{who}: bars lack column(s) {missing}")
    bad = bars.filter(pl.any_horizontal(~pl.col(c).is_finite() | pl.col(c).is_null() for c in ("open", "high", "low", "close")))
    if bad.height:
        row = bad.row(0, named=True)
        raise StrategyError(f"{who}: {bad.height} bar(s) with NaN/null prices, first {row['symbol']} at {row['ts']}")


def sorted_by_symbol_ts(bars: pl.DataFrame) -> bool:
    """Whether the rows are already in (symbol, ts) order: cheaper to check than to sort again (a
    lake read, a backtest's slice). Only plain text symbols without nulls count: a categorical's or
    a null's place in the sort is not the place a text comparison gives."""
    symbol, ts = bars["symbol"], bars["ts"]
    if symbol.dtype != pl.String or symbol.null_count() or ts.null_count() or not symbol.is_sorted():
        return False
    if ts.is_sorted():
        return True
    # Several symbols: ts may fall only where a new symbol's run starts.
    falls_within_symbol = (pl.col("ts") < pl.col("ts").shift(1)) & (pl.col("symbol") == pl.col("symbol").shift(1))
    return not bars.select(falls_within_symbol.any()).item()


def no_levels() -> list[pl.Expr]:
    """Null stop and targets, for strategies without a bracket."""
    return [pl.lit(None, pl.Float64).alias(c) for c in ("stop", "target1", "target2")]


def no_shorts() -> list[pl.Expr]:
    return [pl.lit(False).alias("entry_short"), pl.lit(False).alias("exit_short")]


def rank_across(score: pl.Expr) -> pl.Expr:
    """Each symbol's rank by `score` among the symbols at the same ts: 1 the highest, ties by symbol
    order (the frame's row order, sorted by symbol and ts), null without a score."""
    return score.rank("ordinal", descending=True).over("ts")


def crossed_above(a: pl.Expr, b: pl.Expr | float) -> pl.Expr:
    """a crosses above b (a series or a level) at this row: above now, not above on the previous row."""
    b_prev = b.shift(1) if isinstance(b, pl.Expr) else b
    return (a > b) & (a.shift(1) <= b_prev)


def crossed_below(a: pl.Expr, b: pl.Expr | float) -> pl.Expr:
    """a crosses below b at this row: below now, not below on the previous row."""
    b_prev = b.shift(1) if isinstance(b, pl.Expr) else b
    return (a < b) & (a.shift(1) >= b_prev)
