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
  QUANTLAKE_DAILY_BUDGET_USD / QUANTLAKE_DAILY_BUDGET_TOKENS / QUANTLAKE_MONTHLY_BUDGET_USD; QUANTLAKE_LLM_CACHE: where model answers
  are kept for replays.
The values come from the one settings object (`orchestration/settings.py`), validated when the
resources are built: a bad value fails the load naming its variable. Alpaca keys go through
`dg.EnvVar`, so Dagster never shows or logs their values; a model agent's key is looked up when its
pipeline is loaded and passed down as a SecretStr (`run_context.pipeline_with_keys`).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from assets.news import NewsResource
from assets.resources import MarketDataResource, TradingResource
from orchestration.run_context import ObservedLakeResource, ObservedTradingResource
from orchestration.settings import Settings, settings
from trading.ledger.store import default_url


def market_data_resource(env: Settings | None = None) -> MarketDataResource:
    env = env or settings()
    source = env.source
    kwargs: dict[str, Any] = {"source": source, "seed": env.seed, "exchange": env.exchange, "max_jump": env.max_jump}
    if source == "alpaca":
        kwargs |= {
            "alpaca_api_key": dg.EnvVar("ALPACA_API_KEY"),
            "alpaca_secret_key": dg.EnvVar("ALPACA_SECRET_KEY"),
            "alpaca_feed": env.alpaca_data_feed,
            "alpaca_url_override": env.alpaca_data_url,
            "fallback_to_synthetic": env.fallback,
        }
    if source == "files":
        kwargs |= {"files_glob": env.files_glob, "files_timezone": env.files_tz}
        if env.files_column_map:  # OURS=THEIRS,..., as `ingest --column-map`
            from lake.sources.files import parse_column_map

            kwargs["files_column_map"] = parse_column_map(env.files_column_map)
    return MarketDataResource(**kwargs)


def news_resource(env: Settings | None = None) -> NewsResource:
    """QUANTLAKE_NEWS_SOURCE (auto: Alpaca's news with keys, else the generator), QUANTLAKE_NEWS_FILES_GLOB
    and _TZ for files, ALPACA_DATA_URL (news is on Alpaca's data host), QUANTLAKE_SEED, QUANTLAKE_EXCHANGE."""
    env = env or settings()
    kwargs: dict[str, Any] = {"source": env.news_source, "seed": env.seed, "exchange": env.exchange}
    if env.news_source == "alpaca":
        kwargs |= {
            "alpaca_api_key": dg.EnvVar("ALPACA_API_KEY"),
            "alpaca_secret_key": dg.EnvVar("ALPACA_SECRET_KEY"),
            "alpaca_url_override": env.alpaca_data_url,
        }
    if env.news_source == "files":
        kwargs |= {"files_glob": env.news_files_glob, "files_timezone": env.news_files_tz}
    return NewsResource(**kwargs)


def trading_resource(env: Settings | None = None) -> TradingResource:
    env = env or settings()
    kwargs: dict[str, Any] = {
        "mode": env.mode,
        "ledger_url": env.ledger_url or (default_url(env.ledger_path) if env.ledger_path else ""),
        "pipeline_file": env.pipeline_file,
        "llm_model": env.openai_model,
        "llm_base_url": env.openai_base_url,
        "cache_dir": env.llm_cache,
        "live_opt_in": env.live_opt_in,
        "live_confirmed": env.live_confirmed,  # the second, environment-only opt-in
        "alpaca_trading_url": env.alpaca_trading_url,
        "sim_state_file": env.sim_state,  # simulation mode's account between runs
        "daily_budget_usd": env.daily_budget_usd,
        "daily_budget_tokens": env.daily_budget_tokens,
        "monthly_budget_usd": env.monthly_budget_usd,
    }
    if env.has_alpaca_keys:
        kwargs |= {"alpaca_api_key": dg.EnvVar("ALPACA_API_KEY"), "alpaca_secret_key": dg.EnvVar("ALPACA_SECRET_KEY")}
    return ObservedTradingResource(**kwargs)  # its runs log with their run/cycle/trace ids; model keys passed in


def build_resources() -> dict[str, Any]:
    env = settings()  # validated once: a bad variable fails the load with its name
    return {
        # Empty root: the path is resolved from QUANTLAKE_LAKE_DIR when used, not frozen at load.
        "lake": ObservedLakeResource(),
        "market_data": market_data_resource(env),
        "trading": trading_resource(env),
        "news_source": news_resource(env),  # QUANTLAKE_NEWS_SOURCE
    }
