"""Raw bars from the configured source, validated, written to the lake.

Each partition asks its source for a window that tiles time (`lake.calendar.day_window` /
`year_window`: nights, weekends and holidays belong to the session before), so every row a source
returns lands in exactly one partition, written or quarantined with its reason, never in none.
"""


from collections.abc import Iterator
from datetime import date

import dagster as dg

from assets.clock import run_now
from assets.ingest import check_specs, ingest_partition
from assets.partitions import daily_partitions, intraday_partitions
from assets.policies import MARKET_DATA_POOL, TRANSIENT_RETRY, bad_input_fails_once
from assets.resources import LakeResource, MarketDataResource
from lake.calendar import day_window, session_bounds, trading_days, year_window
from lake.errors import SourceError, TransientSourceError


def _nothing(market_data: MarketDataResource) -> type[SourceError]:
    """An empty answer: a vendor may publish late (worth asking again); files will not change."""
    return TransientSourceError if market_data.source == "alpaca" else SourceError


@dg.asset(
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
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    day, symbol = keys["date"], keys["symbol"]
    with bad_input_fails_once(context):
        opened = session_bounds(day, market_data.exchange)[0]
        start, window_end = day_window(day, market_data.exchange)
        # Today's partition holds the bars so far: never ask a source for minutes that have not happened.
        end = min(window_end, run_now(context).replace(second=0, microsecond=0))
        if end <= opened:
            raise SourceError(f"{symbol} {day}: the session has not opened yet")
        bars = market_data.build("1m").fetch([symbol], "1m", start, end)
        if bars.is_empty():
            raise _nothing(market_data)(f"{market_data.source}: no 1m bars for {symbol} on {day}")
        yield from ingest_partition(
            context, lake.path, bars, timeframe="1m", symbol=symbol, period=day, exchange=market_data.exchange,
            expected_from=start, expected_until=end,
        )


@dg.asset(
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
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    year, symbol = keys["year"], keys["symbol"]
    with bad_input_fails_once(context):
        days = trading_days(date(int(year), 1, 1), date(int(year), 12, 31), market_data.exchange)
        now = run_now(context)
        closed = [d for d in days if session_bounds(d, market_data.exchange)[1] <= now]
        if not closed:
            raise SourceError(f"no closed {market_data.exchange} session in {year} yet")
        start, year_end = year_window(int(year))
        # A year not over yet ends at its last closed session: a session in progress has no daily bar yet.
        end = year_end if now >= year_end else session_bounds(closed[-1], market_data.exchange)[1]
        bars = market_data.build("1d").fetch([symbol], "1d", start, end)
        if bars.is_empty():
            raise _nothing(market_data)(f"{market_data.source}: no 1d bars for {symbol} in {year}")
        yield from ingest_partition(
            context, lake.path, bars, timeframe="1d", symbol=symbol, period=year, exchange=market_data.exchange,
            expected_from=start, expected_until=end,
        )
