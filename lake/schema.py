"""The one bar schema. Every source and every reader goes through `conform_bars`.

Columns: symbol, timeframe, ts (bar-open, UTC, microseconds), open, high, low, close (float64),
volume (float64, fractional for some assets), vwap (float64, nullable), trade_count (int64, nullable).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import polars as pl

from lake.errors import BarSchemaError

TS_DTYPE: Final = pl.Datetime("us", "UTC")

BAR_SCHEMA: Final[dict[str, pl.DataType]] = {
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "ts": TS_DTYPE,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "vwap": pl.Float64(),
    "trade_count": pl.Int64(),
}
REQUIRED_COLUMNS: Final = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: Final = ("vwap", "trade_count")
PRICE_COLUMNS: Final = ("open", "high", "low", "close")

# Timeframe label -> bar length. Daily bars are stamped at the session open.
TIMEFRAMES: Final[dict[str, timedelta]] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


def check_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAMES:
        raise BarSchemaError(f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAMES)}")
    return timeframe


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_SCHEMA)


def conform_bars(df: pl.DataFrame, *, where: str = "bars") -> pl.DataFrame:
    """Return `df` in the bar schema (column order, dtypes), or raise naming what is wrong.

    Optional columns are added as nulls; extra columns are dropped. Timestamps must be timezone-aware
    (a naive timestamp is ambiguous, so it is an error rather than a guess).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BarSchemaError(f"{where}: missing required column(s) {missing}; got {df.columns}")
    ts_dtype = df.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime):
        raise BarSchemaError(f"{where}: column 'ts' must be a datetime, got {ts_dtype}")
    if ts_dtype.time_zone is None:
        raise BarSchemaError(f"{where}: column 'ts' is timezone-naive; localize it to the source timezone first")
    exprs: list[pl.Expr] = []
    for name, dtype in BAR_SCHEMA.items():
        if name == "ts":
            exprs.append(pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif name in df.columns:
            exprs.append(pl.col(name).cast(dtype, strict=False).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    try:
        out = df.select(exprs)
    except pl.exceptions.PolarsError as exc:  # pragma: no cover - polars message is the detail
        raise BarSchemaError(f"{where}: cannot cast to the bar schema: {exc}") from exc
    for name in REQUIRED_COLUMNS:
        new_nulls = out[name].null_count() - df[name].null_count()
        if new_nulls > 0:
            bad = df.filter(out[name].is_null() & df[name].is_not_null())[name].head(3).to_list()
            raise BarSchemaError(f"{where}: column {name!r} has {new_nulls} value(s) not castable to {BAR_SCHEMA[name]}, e.g. {bad}")
    bad_tf = out.filter(~pl.col("timeframe").is_in(list(TIMEFRAMES)))
    if bad_tf.height:
        raise BarSchemaError(f"{where}: unknown timeframe {bad_tf['timeframe'][0]!r}")
    return out
