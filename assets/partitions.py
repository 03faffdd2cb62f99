"""Partitions on the exchange's trading days and on symbols.

Read once at load time from the environment (documented in the README):
- QUANTLAKE_UNIVERSE: comma-separated symbols (default: the offline generator's universe).
- QUANTLAKE_PARTITION_START: first trading day with partitions (default 2022-01-03).
- QUANTLAKE_EXCHANGE: exchange calendar (default XNYS).
Trading-day keys run up to 30 days ahead so that a schedule firing today always finds its partition.
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import dagster as dg

from lake.calendar import DEFAULT_EXCHANGE, trading_days

DEFAULT_UNIVERSE = ("AAPL", "MSFT", "AMZN", "GOOGL", "NVDA", "META", "JPM", "XOM")


def universe() -> list[str]:
    raw = os.environ.get("QUANTLAKE_UNIVERSE", "")
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()] or list(DEFAULT_UNIVERSE)
    return sorted(dict.fromkeys(symbols))


def exchange() -> str:
    return os.environ.get("QUANTLAKE_EXCHANGE", DEFAULT_EXCHANGE)


def partition_start() -> date:
    return date.fromisoformat(os.environ.get("QUANTLAKE_PARTITION_START", "2022-01-03"))


def _day_keys() -> list[str]:
    return [d.isoformat() for d in trading_days(partition_start(), date.today() + timedelta(days=30), exchange())]


def _year_keys() -> list[str]:
    return [str(y) for y in range(partition_start().year, date.today().year + 1)]


symbol_partitions = dg.StaticPartitionsDefinition(universe())
trading_day_partitions = dg.StaticPartitionsDefinition(_day_keys())
year_partitions = dg.StaticPartitionsDefinition(_year_keys())

# Intraday data: one partition per (trading day, symbol). Daily bars: one per (year, symbol), since a
# trading-day partition of daily bars would hold a single row.
intraday_partitions = dg.MultiPartitionsDefinition({"date": trading_day_partitions, "symbol": symbol_partitions})
daily_partitions = dg.MultiPartitionsDefinition({"year": year_partitions, "symbol": symbol_partitions})


def intraday_key(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


def daily_key(year: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"year": year, "symbol": symbol})
