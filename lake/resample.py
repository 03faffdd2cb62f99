"""1-minute bars to coarser bars, anchored at the session open.

5m and 15m buckets align with the clock (sessions open on the half hour). Hourly buckets start at
the open (09:30, 10:30, ... ET; the last one is short). A daily bar is the whole session, stamped at
its first minute. A bucket's open is its first minute's open, close its last minute's close.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from lake.calendar import EXCHANGE_TZ
from lake.errors import BarSchemaError
from lake.schema import conform_bars

CoarseTimeframe = Literal["5m", "15m", "1h", "1d"]


def _bucket(timeframe: str) -> pl.Expr:
    ts = pl.col("ts")
    if timeframe in ("5m", "15m"):
        return ts.dt.truncate(timeframe)
    if timeframe == "1h":
        # Sessions open at :30 UTC in every season, so an hour shifted by 30 minutes is open-anchored.
        return (ts - pl.duration(minutes=30)).dt.truncate("1h") + pl.duration(minutes=30)
    if timeframe == "1d":
        return ts.min().over("symbol", ts.dt.convert_time_zone(EXCHANGE_TZ).dt.date())
    raise BarSchemaError(f"cannot resample 1m bars to {timeframe!r}; expected one of 5m, 15m, 1h, 1d")


def resample_bars(minutes: pl.DataFrame, timeframe: CoarseTimeframe) -> pl.DataFrame:
    """Aggregates 1m bars (any symbols) to `timeframe`; vwap is volume-weighted, counts are summed."""
    if minutes.height and set(minutes["timeframe"].unique().to_list()) != {"1m"}:
        raise BarSchemaError(f"resample_bars expects 1m bars, got timeframes {minutes['timeframe'].unique().to_list()}")
    bucketed = minutes.sort("symbol", "ts").with_columns(_bucket(timeframe).alias("bucket"))
    vwap_weight = pl.when(pl.col("vwap").is_not_null()).then(pl.col("volume")).otherwise(0.0)
    out = (
        bucketed.group_by("symbol", "bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.when(vwap_weight.sum() > 0).then((pl.col("vwap") * vwap_weight).sum() / vwap_weight.sum()).alias("vwap"),
            pl.when(pl.col("trade_count").is_not_null().any()).then(pl.col("trade_count").sum()).alias("trade_count"),
        )
        .rename({"bucket": "ts"})
        .with_columns(pl.lit(timeframe).alias("timeframe"))
    )
    return conform_bars(out, where=f"resample to {timeframe}")
