"""Raw bars from the configured source, validated, written to the lake.

Each partition asks its source for a window that tiles time (`lake.calendar.day_window` /
`year_window`: nights, weekends and holidays belong to the session before), so every row a source
returns lands in exactly one partition, written or quarantined with its reason, never in none.

A backfill of a range is one run (`BackfillPolicy.single_run()`; for these two-dimensional
partitions Dagster makes one run per symbol over the range of days, or per day over a range of
symbols, whichever is fewer): the run fetches the whole range at once, validates it at once and
writes each partition's files, the same files a run per partition writes (`ingest_partitions`).
"""


from bisect import bisect_right
from collections.abc import Iterator
from datetime import date, datetime
from functools import lru_cache

import dagster as dg

from assets.clock import run_now
from assets.ingest import Partition, check_specs, ingest_partition, ingest_partitions
from assets.partitions import daily_partitions, intraday_partitions
from assets.policies import MARKET_DATA_POOL, TRANSIENT_RETRY, bad_input_fails_once
from assets.range_runs import range_asset
from assets.resources import LakeResource, MarketDataResource
from lake.calendar import day_window, session_bounds, sessions_frame, trading_days, year_window
from lake.errors import LakeError, SourceError, TransientSourceError


def _dimensions(context: dg.AssetExecutionContext, partitions_def: dg.MultiPartitionsDefinition) -> list[tuple[str, dict[str, str]]]:
    """(key, its value per dimension) for every partition of the run: one, or a backfill's range."""
    out = []
    for key in context.partition_keys:
        multi = key if isinstance(key, dg.MultiPartitionKey) else partitions_def.get_partition_key_from_str(key)
        out.append((str(key), dict(multi.keys_by_dimension)))  # type: ignore[union-attr]
    return out


def _contiguous(wanted: list[str], have: list[str], what: str) -> None:
    """A range run fetches from its first period to its last: it must hold every period between."""
    if wanted != have:
        raise LakeError(f"a run over {what} {wanted[0]}..{wanted[-1]} must cover every one between; it has {len(wanted)} of {len(have)}")


def _nothing(market_data: MarketDataResource) -> type[SourceError]:
    """An empty answer: a vendor may publish late (worth asking again); files will not change."""
    return TransientSourceError if market_data.source == "alpaca" else SourceError


@range_asset(
    partitions_def=intraday_partitions,
    check_specs=check_specs("bars_1m"),
    group_name="market_data",
    kinds={"polars", "parquet"},
    retry_policy=TRANSIENT_RETRY,
    pool=MARKET_DATA_POOL,
)
def bars_1m(
    context: dg.AssetExecutionContext, lake: LakeResource, market_data: MarketDataResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """1-minute bars of one symbol for one trading day, validated; failing rows go to quarantine."""
    runs = _dimensions(context, intraday_partitions)
    if len(runs) > 1:
        yield from _minute_range(context, lake, market_data, runs)
        return
    day, symbol = runs[0][1]["date"], runs[0][1]["symbol"]
    with bad_input_fails_once(context):
        opened = session_bounds(day, market_data.exchange)[0]
        start, window_end = day_window(day, market_data.exchange)
        # Today's partition holds the bars so far: never ask a source for minutes that have not happened.
        end = min(window_end, run_now(context).replace(second=0, microsecond=0))
        if end <= opened:
            raise SourceError(f"{symbol} {day}: the session has not opened yet")
        source = market_data.build("1m")
        bars = source.fetch([symbol], "1m", start, end)
        if bars.is_empty():
            raise _nothing(market_data)(f"{market_data.source}: no 1m bars for {symbol} on {day}")
        yield from ingest_partition(
            context, lake.location, bars, timeframe="1m", symbol=symbol, period=day, exchange=market_data.exchange,
            expected_from=start, expected_until=end, validation=market_data.validation_options(source),
        )


@range_asset(
    partitions_def=daily_partitions,
    check_specs=check_specs("bars_1d"),
    group_name="market_data",
    kinds={"polars", "parquet"},
    retry_policy=TRANSIENT_RETRY,
    pool=MARKET_DATA_POOL,
)
def bars_1d(
    context: dg.AssetExecutionContext, lake: LakeResource, market_data: MarketDataResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Daily bars of one symbol for one year (up to the last closed session), validated."""
    runs = _dimensions(context, daily_partitions)
    if len(runs) > 1:
        yield from _daily_range(context, lake, market_data, runs)
        return
    year, symbol = runs[0][1]["year"], runs[0][1]["symbol"]
    with bad_input_fails_once(context):
        start, end = _year_range(year, year, market_data.exchange, run_now(context))
        source = market_data.build("1d")
        bars = source.fetch([symbol], "1d", start, end)
        if bars.is_empty():
            raise _nothing(market_data)(f"{market_data.source}: no 1d bars for {symbol} in {year}")
        yield from ingest_partition(
            context, lake.location, bars, timeframe="1d", symbol=symbol, period=year, exchange=market_data.exchange,
            expected_from=start, expected_until=end, validation=market_data.validation_options(source),
        )


def _year_range(first: str, last: str, exchange: str, now: datetime) -> tuple[datetime, datetime]:
    """What years `first`..`last` ask a source for: up to the last closed session of `last`."""
    closes = _session_closes(int(last), exchange)
    closed = bisect_right(closes, now)  # the sessions of `last` closed by `now`
    if not closed:
        raise SourceError(f"no closed {exchange} session in {last} yet")
    year_end = year_window(int(last))[1]
    # A year not over yet ends at its last closed session: a session in progress has no daily bar yet.
    return year_window(int(first))[0], year_end if now >= year_end else closes[closed - 1]


@lru_cache(maxsize=16)
def _session_closes(year: int, exchange: str) -> tuple[datetime, ...]:
    """Every session close of `year` in order, from one calendar table: a lookup per session cost
    ~1 % of the soak (every daily run asked for all ~252)."""
    return tuple(sessions_frame(date(year, 1, 1), date(year, 12, 31), exchange)["close"].to_list())


def _minute_range(
    context: dg.AssetExecutionContext, lake: LakeResource, market_data: MarketDataResource, runs: list[tuple[str, dict[str, str]]]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """A backfill run over days x symbols of 1-minute bars (see the module's docstring)."""
    exchange = market_data.exchange
    with bad_input_fails_once(context):
        days = sorted({dims["date"] for _, dims in runs})
        _contiguous(days, [d.isoformat() for d in trading_days(days[0], days[-1], exchange)], "sessions")
        symbols = sorted({dims["symbol"] for _, dims in runs})
        opened = session_bounds(days[-1], exchange)[0]
        start, window_end = day_window(days[0], exchange)[0], day_window(days[-1], exchange)[1]
        end = min(window_end, run_now(context).replace(second=0, microsecond=0))
        if end <= opened:
            raise SourceError(f"{days[-1]}: the session has not opened yet")
        source = market_data.build("1m")
        bars = source.fetch(symbols, "1m", start, end)
        if bars.is_empty():
            raise _nothing(market_data)(f"{market_data.source}: no 1m bars for {symbols} from {days[0]} to {days[-1]}")
        starts = {day: day_window(day, exchange)[0] for day in days}
        partitions = [Partition(key, dims["symbol"], dims["date"], starts[dims["date"]]) for key, dims in runs]
        yield from ingest_partitions(
            context, lake.location, bars, timeframe="1m", partitions=partitions, exchange=exchange,
            expected_from=start, expected_until=end, nothing=_nothing(market_data), validation=market_data.validation_options(source),
        )


def _daily_range(
    context: dg.AssetExecutionContext, lake: LakeResource, market_data: MarketDataResource, runs: list[tuple[str, dict[str, str]]]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """A backfill run over years x symbols of daily bars."""
    with bad_input_fails_once(context):
        years = sorted({dims["year"] for _, dims in runs})
        _contiguous(years, [str(y) for y in range(int(years[0]), int(years[-1]) + 1)], "years")
        symbols = sorted({dims["symbol"] for _, dims in runs})
        start, end = _year_range(years[0], years[-1], market_data.exchange, run_now(context))
        source = market_data.build("1d")
        bars = source.fetch(symbols, "1d", start, end)
        if bars.is_empty():
            raise _nothing(market_data)(f"{market_data.source}: no 1d bars for {symbols} in {years[0]}..{years[-1]}")
        partitions = [Partition(key, dims["symbol"], dims["year"], year_window(int(dims["year"]))[0]) for key, dims in runs]
        yield from ingest_partitions(
            context, lake.location, bars, timeframe="1d", partitions=partitions, exchange=market_data.exchange,
            expected_from=start, expected_until=end, nothing=_nothing(market_data), validation=market_data.validation_options(source),
        )
