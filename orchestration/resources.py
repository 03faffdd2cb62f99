"""Resources from the environment. With no keys everything is offline (generator, local lake).

- QUANTLAKE_DATA_SOURCE: synthetic | alpaca | files | auto (default: auto = alpaca when ALPACA_API_KEY
  and ALPACA_SECRET_KEY are set, else synthetic).
- ALPACA_API_KEY / ALPACA_SECRET_KEY / ALPACA_DATA_FEED / ALPACA_DATA_URL: Alpaca market data.
- QUANTLAKE_FALLBACK: "1" to fall back to the generator when Alpaca fails (each fallback is counted).
- QUANTLAKE_FILES_GLOB / QUANTLAKE_FILES_TZ / QUANTLAKE_FILES_COLUMN_MAP: a user's own CSV/Parquet
  files (the map as OURS=THEIRS,..., e.g. ts=Date,close=Close).
- QUANTLAKE_LAKE_DIR: the lake root (default data/lake); QUANTLAKE_SEED: the generator's seed.
- QUANTLAKE_MODE: validation (default) | simulation | paper | live (live also needs
  QUANTLAKE_LIVE_OPT_IN=1 and QUANTLAKE_LIVE_TRADING=yes); QUANTLAKE_LEDGER_URL: the ledger database;
  QUANTLAKE_SIM_STATE: the simulated account's state file (default data/sim_broker.json).
- QUANTLAKE_PIPELINE: a pipeline config file; OPENAI_MODEL / OPENAI_BASE_URL: fill in the model and
  server the file leaves open (no analyst in the file: the model analyst), never replacing what it says;
  QUANTLAKE_DAILY_BUDGET_USD / QUANTLAKE_DAILY_BUDGET_TOKENS; QUANTLAKE_LLM_CACHE: where model answers
  are kept for replays.
Keys go through `dg.EnvVar`, so Dagster never shows or logs their values.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from assets.partitions import exchange
from assets.resources import MarketDataResource, TradingResource
from orchestration.run_context import ObservedLakeResource, ObservedTradingResource


def _source() -> str:
    choice = os.environ.get("QUANTLAKE_DATA_SOURCE", "auto").lower()
    if choice == "auto":
        has_keys = bool(os.environ.get("ALPACA_API_KEY") and os.environ.get("ALPACA_SECRET_KEY"))
        return "alpaca" if has_keys else "synthetic"
    if choice not in {"synthetic", "alpaca", "files"}:
        raise ValueError(f"QUANTLAKE_DATA_SOURCE={choice!r}: expected synthetic, alpaca, files or auto")
    return choice


def market_data_resource() -> MarketDataResource:
    source = _source()
    kwargs: dict[str, Any] = {
        "source": source,
        "seed": int(os.environ.get("QUANTLAKE_SEED", "7")),
        "exchange": exchange(),
    }
    if source == "alpaca":
        kwargs |= {
            "alpaca_api_key": dg.EnvVar("ALPACA_API_KEY"),
            "alpaca_secret_key": dg.EnvVar("ALPACA_SECRET_KEY"),
            "alpaca_feed": os.environ.get("ALPACA_DATA_FEED", "iex"),
            "alpaca_url_override": os.environ.get("ALPACA_DATA_URL") or None,
            "fallback_to_synthetic": os.environ.get("QUANTLAKE_FALLBACK", "0") == "1",
        }
    if source == "files":
        kwargs |= {
            "files_glob": os.environ.get("QUANTLAKE_FILES_GLOB"),
            "files_timezone": os.environ.get("QUANTLAKE_FILES_TZ", "America/New_York"),
        }
        if column_map := os.environ.get("QUANTLAKE_FILES_COLUMN_MAP"):  # OURS=THEIRS,..., as `ingest --column-map`
            from lake.sources.files import parse_column_map

            kwargs["files_column_map"] = parse_column_map(column_map)
    return MarketDataResource(**kwargs)


def trading_resource() -> TradingResource:
    kwargs: dict[str, Any] = {
        "mode": os.environ.get("QUANTLAKE_MODE", "validation"),
        "ledger_url": os.environ.get("QUANTLAKE_LEDGER_URL", ""),
        "pipeline_file": os.environ.get("QUANTLAKE_PIPELINE", ""),
        "llm_model": os.environ.get("OPENAI_MODEL", ""),
        "llm_base_url": os.environ.get("OPENAI_BASE_URL", ""),
        "cache_dir": os.environ.get("QUANTLAKE_LLM_CACHE", ""),
        "live_opt_in": os.environ.get("QUANTLAKE_LIVE_OPT_IN", "0") == "1",
        "live_confirmed": os.environ.get("QUANTLAKE_LIVE_TRADING") == "yes",  # the second, environment-only opt-in
        "alpaca_trading_url": os.environ.get("ALPACA_TRADING_URL") or None,
        "sim_state_file": os.environ.get("QUANTLAKE_SIM_STATE", ""),  # simulation mode's account between runs
    }
    if budget := os.environ.get("QUANTLAKE_DAILY_BUDGET_USD"):
        kwargs["daily_budget_usd"] = float(budget)
    if tokens := os.environ.get("QUANTLAKE_DAILY_BUDGET_TOKENS"):
        kwargs["daily_budget_tokens"] = int(tokens)
    if os.environ.get("ALPACA_API_KEY") and os.environ.get("ALPACA_SECRET_KEY"):
        kwargs |= {"alpaca_api_key": dg.EnvVar("ALPACA_API_KEY"), "alpaca_secret_key": dg.EnvVar("ALPACA_SECRET_KEY")}
    return ObservedTradingResource(**kwargs)  # its runs log with their run/cycle/trace ids


def build_resources() -> dict[str, Any]:
    return {
        # Empty root: the path is resolved from QUANTLAKE_LAKE_DIR when used, not frozen at load.
        "lake": ObservedLakeResource(),
        "market_data": market_data_resource(),
        "trading": trading_resource(),
    }
