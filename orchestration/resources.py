"""Resources from the environment. With no keys everything is offline (generator, local lake).

- QUANTLAKE_DATA_SOURCE: synthetic | alpaca | files | auto (default: auto = alpaca when ALPACA_API_KEY
  and ALPACA_SECRET_KEY are set, else synthetic).
- ALPACA_API_KEY / ALPACA_SECRET_KEY / ALPACA_DATA_FEED / ALPACA_DATA_URL: Alpaca market data.
- QUANTLAKE_FALLBACK: "1" to fall back to the generator when Alpaca fails (each fallback is counted).
- QUANTLAKE_FILES_GLOB / QUANTLAKE_FILES_TZ: a user's own CSV/Parquet files.
- QUANTLAKE_LAKE_DIR: the lake root (default data/lake); QUANTLAKE_SEED: the generator's seed.
Keys go through `dg.EnvVar`, so Dagster never shows or logs their values.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from assets.partitions import exchange
from assets.resources import LakeResource, MarketDataResource


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
    return MarketDataResource(**kwargs)


def build_resources() -> dict[str, Any]:
    return {
        "lake": LakeResource(root=os.environ.get("QUANTLAKE_LAKE_DIR", "")),
        "market_data": market_data_resource(),
    }
