"""Derived data: resampled timeframes and per-symbol features, partition by partition."""


from datetime import date, timedelta
from typing import Any

import dagster as dg
import polars as pl

from assets.metadata import markdown_table
from assets.partitions import daily_partitions, intraday_partitions
from assets.resources import LakeResource
from lake.calendar import session_bounds, trading_days
from lake.features import compute_features
from lake.resample import resample_bars
from lake.store import read_bars, replace_partition

RESAMPLED_TIMEFRAMES = ("5m", "15m", "1h", "1d")
RESAMPLED = "resampled"
FEATURES = "features"


def _day_symbol(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    return keys["date"], keys["symbol"]


@dg.asset(partitions_def=intraday_partitions, deps=["bars_1m"], group_name="derived", kinds={"polars", "parquet"})
def bars_resampled(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The day's 1-minute bars aggregated to 5m, 15m, 1h and 1d (session-stamped) bars."""
    day, symbol = _day_symbol(context)
    start, end = session_bounds(day)
    minutes = read_bars(lake.path, [symbol], "1m", start, end)
    rows: dict[str, int] = {}
    for timeframe in RESAMPLED_TIMEFRAMES:
        out = resample_bars(minutes, timeframe)  # type: ignore[arg-type]
        replace_partition(lake.path, RESAMPLED, timeframe, symbol, day, out)
        rows[timeframe] = out.height
    return dg.MaterializeResult(
        metadata={"dagster/row_count": sum(rows.values()), **{f"rows_{tf}": n for tf, n in rows.items()}}
    )


def _features_metadata(features: pl.DataFrame) -> dict[str, Any]:
    last = features.tail(1)
    return {
        "dagster/row_count": features.height,
        "preview": dg.MetadataValue.md(markdown_table(features.tail(5))),
        **{f"last_{c}": float(last[c][0]) for c in ("rsi_14", "vol_20") if c in last.columns and last[c][0] is not None},
    }


@dg.asset(partitions_def=intraday_partitions, deps=["bars_1m"], group_name="derived", kinds={"polars", "parquet"})
def features_1m(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Returns, SMA/EMA, RSI, ATR and volatility on 1m bars; warmed up on the previous session."""
    day, symbol = _day_symbol(context)
    prev_days = trading_days(date.fromisoformat(day) - timedelta(days=10), date.fromisoformat(day) - timedelta(days=1))
    start = session_bounds(prev_days[-1])[0] if prev_days else session_bounds(day)[0]
    bars = read_bars(lake.path, [symbol], "1m", start, session_bounds(day)[1])
    features = compute_features(bars).filter(pl.col("ts") >= session_bounds(day)[0])
    replace_partition(lake.path, FEATURES, "1m", symbol, day, features)
    return dg.MaterializeResult(metadata=_features_metadata(features))


@dg.asset(partitions_def=daily_partitions, deps=["bars_1d"], group_name="derived", kinds={"polars", "parquet"})
def features_1d(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Daily features for one symbol-year, warmed up on the previous year's bars."""
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    year, symbol = int(keys["year"]), keys["symbol"]
    bars = read_bars(lake.path, [symbol], "1d", date(year - 1, 1, 1), date(year + 1, 1, 1))
    features = compute_features(bars).filter(pl.col("ts").dt.year() == year)
    replace_partition(lake.path, FEATURES, "1d", symbol, str(year), features)
    return dg.MaterializeResult(metadata=_features_metadata(features))
