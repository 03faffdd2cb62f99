"""Dagster resources over the lake and the market-data sources.

The classes live here so assets can type their parameters; orchestration/resources.py builds them
from the environment (keys only through `dg.EnvVar`, never in code or logs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from lake.paths import default_lake_root
from lake.sources.base import BarSource


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: its root folder (empty = QUANTLAKE_LAKE_DIR or data/lake in the repo)."""

    root: str = Field(default="", description="Lake root folder; empty for the default.")

    @property
    def path(self) -> Path:
        return Path(self.root).expanduser().resolve() if self.root else default_lake_root()


class MarketDataResource(dg.ConfigurableResource):
    """Chooses the bar source: the offline generator, Alpaca (with fallback), or local files."""

    source: Literal["synthetic", "alpaca", "files"] = "synthetic"
    seed: int = 7
    exchange: str = "XNYS"
    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_feed: str = "iex"
    alpaca_adjustment: str = "raw"
    alpaca_url_override: str | None = None
    fallback_to_synthetic: bool = Field(
        default=False, description="After Alpaca fails, fall back to the offline generator (counted)."
    )
    files_glob: str | None = None
    files_timezone: str = "America/New_York"
    files_column_map: dict[str, str] = Field(default_factory=dict)

    def build(self, timeframe: str) -> BarSource:
        from lake.sources.files import FileSource
        from lake.sources.synthetic import SyntheticSource

        if self.source == "synthetic":
            return SyntheticSource(seed=self.seed, exchange=self.exchange)
        if self.source == "files":
            if not self.files_glob:
                raise ValueError("market_data: source 'files' needs files_glob (QUANTLAKE_FILES_GLOB)")
            return FileSource(
                self.files_glob, timeframe=timeframe, timezone=self.files_timezone, column_map=self.files_column_map
            )
        if not (self.alpaca_api_key and self.alpaca_secret_key):
            raise ValueError("market_data: source 'alpaca' needs ALPACA_API_KEY and ALPACA_SECRET_KEY")
        from lake.sources.alpaca import AlpacaSource  # imported only when used: alpaca-py is slow to import
        from lake.sources.fallback import FallbackSource

        alpaca = AlpacaSource(
            api_key=self.alpaca_api_key,
            secret_key=self.alpaca_secret_key,
            feed=self.alpaca_feed,
            adjustment=self.alpaca_adjustment,
            url_override=self.alpaca_url_override,
        )
        if self.fallback_to_synthetic:
            return FallbackSource([alpaca, SyntheticSource(seed=self.seed, exchange=self.exchange)])
        return alpaca
