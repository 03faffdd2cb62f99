"""Jobs. Each partitioned job covers assets that share one partitions definition."""

from __future__ import annotations

import dagster as dg

from assets.partitions import daily_partitions, intraday_partitions

ingest_intraday_job = dg.define_asset_job(
    "ingest_intraday_job",
    selection=dg.AssetSelection.assets("bars_1m", "bars_resampled", "features_1m"),
    partitions_def=intraday_partitions,
    description="1-minute bars for one trading day and symbol: fetch, validate, write, resample, features.",
)

ingest_daily_job = dg.define_asset_job(
    "ingest_daily_job",
    selection=dg.AssetSelection.assets("bars_1d", "features_1d"),
    partitions_def=daily_partitions,
    description="Daily bars for one year and symbol: fetch, validate, write, features.",
)

backtest_job = dg.define_asset_job(
    "backtest_job",
    selection=dg.AssetSelection.assets("backtest"),
    description="One backtest of the configured strategy over the lake's bars (configure in the launchpad).",
)

research_job = dg.define_asset_job(
    "research_job",
    selection=dg.AssetSelection.groups("research"),
    description="Backtest, parameter sweep, walk-forward and Monte Carlo with one run config.",
)

decide_job = dg.define_asset_job(
    "decide_job",
    selection=dg.AssetSelection.assets("decision_cycle"),
    description="One decision cycle for the universe: agents and hard limits decide, the ledger records (paper/live: orders).",
    tags={"quantlake/kind": "trading"},
)

JOBS = [ingest_intraday_job, ingest_daily_job, backtest_job, research_job, decide_job]
