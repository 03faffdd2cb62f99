"""Derived data: resampled timeframes and per-symbol features. Like the bars they come from, each
asset takes a backfill's range in one run (`BackfillPolicy.single_run()`), writing for each
partition what a run of that partition alone writes."""


import warnings
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
import polars as pl

from assets.metadata import markdown_table
from assets.partitions import daily_key, daily_partitions, intraday_partitions, years_partitions
from assets.policies import WAIT_RETRIES, WAIT_SECONDS, run_in_flight_planning
from assets.range_runs import add_partition_metadata, range_asset
from assets.resources import LakeResource
from lake.calendar import session_bounds, trading_days
from lake.errors import LakeError
from lake.features import compute_features
from lake.resample import resample_bars
from lake.store import read_bars, replace_partition

RESAMPLED_TIMEFRAMES = ("5m", "15m", "1h", "1d")
RESAMPLED = "resampled"
FEATURES = "features"


def _day_symbols(context: dg.AssetExecutionContext) -> list[tuple[str, str, str]]:
    """(key, day, symbol) of every partition of the run: one, or a backfill's range."""
    out = []
    for key in context.partition_keys:
        multi = key if isinstance(key, dg.MultiPartitionKey) else intraday_partitions.get_partition_key_from_str(key)
        dims = multi.keys_by_dimension  # type: ignore[union-attr]
        out.append((str(key), dims["date"], dims["symbol"]))
    return out


def _partition_results(context: dg.AssetExecutionContext, metas: dict[str, dict[str, Any]]) -> dg.MaterializeResult:
    """One partition: its metadata on the result; a range: each partition's on its own materialization."""
    if len(metas) == 1:
        return dg.MaterializeResult(metadata=next(iter(metas.values())))
    for key, meta in metas.items():
        add_partition_metadata(context, key, meta)
    return dg.MaterializeResult()


@range_asset(partitions_def=intraday_partitions, deps=["bars_1m"], group_name="derived", kinds={"polars", "parquet"})
def bars_resampled(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The day's 1-minute bars aggregated to 5m, 15m, 1h and 1d (session-stamped) bars; a range run
    does each of its partitions as its own run would."""
    metas: dict[str, dict[str, Any]] = {}
    for key, day, symbol in _day_symbols(context):
        start, end = session_bounds(day)
        minutes = read_bars(lake.location, [symbol], "1m", start, end)
        rows: dict[str, int] = {}
        for timeframe in RESAMPLED_TIMEFRAMES:
            out = resample_bars(minutes, timeframe)  # type: ignore[arg-type]
            replace_partition(lake.location, RESAMPLED, timeframe, symbol, day, out)
            rows[timeframe] = out.height
        metas[key] = {"dagster/row_count": sum(rows.values()), **{f"rows_{tf}": n for tf, n in rows.items()}}
    return _partition_results(context, metas)


# Year Y's features warm up on year Y-1's bars: declared, so a backfill runs features_1d[Y] only
# once bars_1d[Y-1] and bars_1d[Y] of its symbol are in (in the same single run of a range, or after
# it), and the UI's partition lineage shows both years.
with warnings.catch_warnings():  # beta in Dagster 1.13, which we pin: nothing a user can act on
    warnings.simplefilter("ignore", dg.BetaWarning)
    WARM_UP_YEARS = dg.MultiPartitionMapping({
        "year": dg.DimensionPartitionMapping("year", dg.TimeWindowPartitionMapping(start_offset=-1)),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
    })
    # A day's 1-minute features warm up on the previous session's bars (the exclusions skip days off).
    WARM_UP_SESSION = dg.MultiPartitionMapping({
        "date": dg.DimensionPartitionMapping("date", dg.TimeWindowPartitionMapping(start_offset=-1)),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
    })
WARM_UP_CHECK = "warm_up_year_present"
BARS_CHECK = "bars_of_the_year_present"


def _features_metadata(features: pl.DataFrame) -> dict[str, Any]:
    last = features.tail(1)
    return {
        "dagster/row_count": features.height,
        "preview": dg.MetadataValue.md(markdown_table(features.tail(5))),
        **{f"last_{c}": float(last[c][0]) for c in ("rsi_14", "vol_20") if c in last.columns and last.height and last[c][0] is not None},
    }


@range_asset(
    partitions_def=intraday_partitions,
    ins={"bars_1m": dg.AssetIn(partition_mapping=WARM_UP_SESSION, dagster_type=dg.Nothing)},
    group_name="derived",
    kinds={"polars", "parquet"},
)
def features_1m(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Returns, SMA/EMA, RSI, ATR and volatility on 1m bars; warmed up on the previous session (each
    partition of a range run too: the same numbers as its own run)."""
    metas: dict[str, dict[str, Any]] = {}
    for key, day, symbol in _day_symbols(context):
        prev_days = trading_days(date.fromisoformat(day) - timedelta(days=10), date.fromisoformat(day) - timedelta(days=1))
        start = session_bounds(prev_days[-1])[0] if prev_days else session_bounds(day)[0]
        bars = read_bars(lake.location, [symbol], "1m", start, session_bounds(day)[1])
        features = compute_features(bars).filter(pl.col("ts") >= session_bounds(day)[0])
        replace_partition(lake.location, FEATURES, "1m", symbol, day, features)
        metas[key] = _features_metadata(features)
    return _partition_results(context, metas)


def _year_symbols(context: dg.AssetExecutionContext) -> list[tuple[int, str]]:
    """(year, symbol) of every partition of the run: one, or a backfill's range."""
    out = []
    for key in context.partition_keys:
        multi = key if isinstance(key, dg.MultiPartitionKey) else daily_partitions.get_partition_key_from_str(key)
        dims = multi.keys_by_dimension  # type: ignore[union-attr]
        out.append((int(dims["year"]), dims["symbol"]))
    return sorted(out)


def year_features(bars: pl.DataFrame, year: int) -> pl.DataFrame:
    """One year's features from its own bars and the year before's only (no later bar): the same
    numbers whether the year runs alone or in a range (EMA and RSI remember their whole input)."""
    window = bars.filter(pl.col("ts").dt.year().is_between(year - 1, year))
    return compute_features(window).filter(pl.col("ts").dt.year() == year)


def _warm_up_expected(year: int) -> bool:
    """Whether year-1 is a partition (the first year of the data has no warm-up year)."""
    return years_partitions.has_partition_key(str(year - 1))


def _missing_bars_in_flight(context: dg.AssetExecutionContext, partitions: list[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """The bars partitions the run's features need (each year and its warm-up year) that another run,
    launched with this one and not finished, plans to write: (year, symbol) -> that run's id."""
    needed = sorted({(y, s) for y, s in partitions} | {(y - 1, s) for y, s in partitions if _warm_up_expected(y)})
    found = {(y, s): run_in_flight_planning(context.instance, "bars_1d", str(daily_key(str(y), s)), context.run_id) for y, s in needed}
    return {key: run for key, run in found.items() if run is not None}


def _has_year(bars: pl.DataFrame, year: int) -> bool:
    return not bars.filter(pl.col("ts").dt.year() == year).is_empty()


@range_asset(
    partitions_def=daily_partitions,
    ins={"bars_1d": dg.AssetIn(partition_mapping=WARM_UP_YEARS, dagster_type=dg.Nothing)},
    check_specs=[
        dg.AssetCheckSpec(
            WARM_UP_CHECK, asset="features_1d",
            description="Every year but the first warmed up on the year before's bars (absent: its bars were not in the lake yet).",
        ),
        dg.AssetCheckSpec(
            BARS_CHECK, asset="features_1d",
            description="Every year of the run had daily bars in the lake. Failing names the years that had none: nothing was "
            "written for them (a backfill of bars and features takes in the year after its range, whose features warm up on it).",
        ),
    ],
    group_name="derived",
    kinds={"polars", "parquet"},
)
def features_1d(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Daily features for one symbol-year (or a range of them in one run), warmed up on the previous
    year's bars. A year with no bars in the lake writes no file (its materialization says so); bars
    that a run launched with this one has yet to write are waited for (the step retries)."""
    partitions = _year_symbols(context)
    # Asked before reading the lake: a run seen in flight here either wrote its bars before the read
    # or is still running, so no bars can land unnoticed between the two.
    in_flight = _missing_bars_in_flight(context, partitions)
    years_by_symbol: dict[str, list[int]] = {}
    for year, symbol in partitions:
        years_by_symbol.setdefault(symbol, []).append(year)
    bars_by_symbol = {
        symbol: read_bars(lake.location, [symbol], "1d", date(years[0] - 1, 1, 1), date(years[-1] + 1, 1, 1))
        for symbol, years in years_by_symbol.items()
    }
    waiting = {key: run for key, run in in_flight.items() if not _has_year(bars_by_symbol[key[1]], key[0])}
    if waiting:
        names = ", ".join(f"bars_1d {daily_key(str(y), s)} (run {run[:8]})" for (y, s), run in sorted(waiting.items()))
        context.log.info(f"waiting for {names}, not written yet: retrying in {WAIT_SECONDS:g} s")
        raise dg.RetryRequested(max_retries=WAIT_RETRIES, seconds_to_wait=WAIT_SECONDS) from LakeError(
            f"features_1d needs {names}: launched with this run, not written after {WAIT_RETRIES} retries"
        )
    cold: list[str] = []
    no_bars: list[str] = []
    for year, symbol in partitions:
        bars = bars_by_symbol[symbol]
        features = year_features(bars, year)
        replace_partition(lake.location, FEATURES, "1d", symbol, str(year), features)  # none: no file (an old one goes)
        meta = _features_metadata(features)
        if not _has_year(bars, year):
            no_bars.append(f"{symbol} {year}")
            meta["nothing_written"] = f"no daily bars of {symbol} in {year} in the lake (bars_1d {daily_key(str(year), symbol)})"
        elif _warm_up_expected(year) and not _has_year(bars, year - 1):
            cold.append(f"{symbol} {year}")
        if len(partitions) > 1:  # each partition of a range run carries its own metadata
            context.add_asset_metadata(meta, partition_key=str(daily_key(str(year), symbol)))
    yield dg.MaterializeResult(metadata=meta if len(partitions) == 1 else None)
    if cold:
        context.log.warning(f"features without their warm-up year's bars (re-materialize after them): {', '.join(cold)}")
    if no_bars:
        context.log.warning(f"no daily bars in the lake, nothing written: {', '.join(no_bars)}")
    yield dg.AssetCheckResult(
        check_name=WARM_UP_CHECK, passed=not cold,
        metadata={"cold_partitions": dg.MetadataValue.md(", ".join(cold) or "_none_"), "cold_count": len(cold)},
    )
    yield dg.AssetCheckResult(
        check_name=BARS_CHECK, passed=not no_bars, severity=dg.AssetCheckSeverity.WARN,
        metadata={"years_without_bars": dg.MetadataValue.md(", ".join(no_bars) or "_none_"), "without_bars_count": len(no_bars)},
    )
