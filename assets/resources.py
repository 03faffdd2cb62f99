"""Dagster resources over the lake and the market-data sources.

The classes live here so assets can type their parameters; orchestration/resources.py builds them
from the environment (keys only through `dg.EnvVar`, never in code or logs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from lake.errors import LakeError
from lake.filesystem import ObjectPath, is_object_store_url, lake_location
from lake.paths import default_lake_root
from lake.sources.base import BarSource

if TYPE_CHECKING:
    from trading.brokers.base import Broker
    from trading.brokers.simulated import SimulatedBroker
    from trading.ledger import Ledger
    from trading.pipeline import PipelineConfig


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: a local folder or an S3-compatible object store's prefix.

    `location` is where the datasets live (bars, quarantine, derived, research outputs): every
    reader and writer of the lake takes it. `path` is the same lake as a local folder, for what
    works on local files only (the demo's bulk ingest): it refuses an
    object-store lake rather than quietly using some other folder.
    """

    root: str = Field(default="", description="Lake root folder or s3://bucket/prefix; empty for the default.")
    endpoint: str = Field(default="", description="An s3:// root's S3-compatible endpoint, http(s)://host[:port]; empty: AWS.")

    def default_location(self) -> Path | ObjectPath:
        """The lake when `root` is empty."""
        return default_lake_root()

    @property
    def location(self) -> Path | ObjectPath:
        if not self.root:
            return self.default_location()
        if is_object_store_url(self.root):
            return lake_location(self.root, endpoint=self.endpoint or None)
        return Path(self.root).expanduser().resolve()

    @property
    def path(self) -> Path:
        location = self.location
        if isinstance(location, ObjectPath):
            raise LakeError(f"this step needs the lake as a local folder and does not run on an object-store lake yet (the lake is {location})")
        return location


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
    max_jump: float = Field(default=10.0, gt=1, description="A close this many times the previous one (or 1/this) blocks (QUANTLAKE_MAX_JUMP).")

    def validation_options(self, source: BarSource) -> dict[str, Any]:
        """What validation needs from this configuration and `source`: the jump threshold, and whether
        the source sends extended-hours bars by design (Alpaca, also behind a fallback)."""
        sources = getattr(source, "sources", [source])
        return {"max_jump": self.max_jump, "extended_hours": any(getattr(s, "extended_hours", False) for s in sources)}

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


class TradingResource(dg.ConfigurableResource):
    """Where decisions go: the ledger, the mode, the agent pipeline, and (for paper/live) the broker."""

    mode: Literal["validation", "simulation", "paper", "live"] = Field(
        default="validation", description="validation decides and sends nothing; paper uses Alpaca's paper account."
    )
    ledger_url: str = Field(default="", description="SQLAlchemy URL; empty: QUANTLAKE_LEDGER_PATH or data/ledger.sqlite.")
    pipeline_file: str = Field(default="", description="A JSON/YAML pipeline config; empty: the rule-based default.")
    llm_model: str = Field(default="", description="The model for model agents the pipeline file leaves open (no file analyst: the model analyst).")
    llm_base_url: str = Field(default="", description="An OpenAI-compatible server for model agents the file gives none, e.g. a local model.")
    cache_dir: str = Field(default="", description="Keep model answers here, so past cycles can be replayed.")
    daily_budget_usd: float | None = Field(default=None, ge=0)
    daily_budget_tokens: int | None = Field(default=None, ge=0, description="Model tokens a day (priced or not).")
    monthly_budget_usd: float | None = Field(default=None, ge=0, description="USD a calendar month (the decision bar's).")
    live_opt_in: bool = False
    live_confirmed: bool = False  # QUANTLAKE_LIVE_TRADING=yes in the environment (orchestration.resources reads it)
    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_trading_url: str | None = None
    sim_state_file: str = Field(default="", description="simulation mode: the simulated broker's state between runs.")
    initial_cash: float = Field(default=100_000.0, gt=0, description="simulation mode: the simulated account's cash.")

    def _sim_path(self) -> Path:
        from lake.paths import REPO_ROOT

        return Path(self.sim_state_file) if self.sim_state_file else REPO_ROOT / "data" / "sim_broker.json"

    def simulated_broker(self) -> SimulatedBroker:
        """The simulated account as the last run left it (a new one the first time)."""
        import json

        from trading.brokers.simulated import SimulatedBroker

        path = self._sim_path()
        if path.exists():
            return SimulatedBroker.from_state(json.loads(path.read_text()))
        return SimulatedBroker(cash=self.initial_cash)

    def save_simulated(self, broker: SimulatedBroker) -> None:
        import json

        from lake.store import write_text_atomic

        write_text_atomic(self._sim_path(), json.dumps(broker.to_state()))

    def ledger(self) -> Ledger:
        from trading.ledger import Ledger

        return Ledger(self.ledger_url or None)

    def pipeline(self) -> PipelineConfig:
        from trading.pipeline import load_pipeline_config

        return load_pipeline_config(
            self.pipeline_file or None,
            llm_model=self.llm_model or None,
            llm_base_url=self.llm_base_url or None,
            daily_budget_usd=self.daily_budget_usd,
            daily_budget_tokens=self.daily_budget_tokens,
            monthly_budget_usd=self.monthly_budget_usd,
        )

    def broker(self) -> Broker | None:
        from trading.execution import check_mode
        from trading.models import Mode

        mode = Mode(self.mode)
        check_mode(mode, live_opt_in=self.live_opt_in, live_confirmed=self.live_confirmed)
        if mode == Mode.VALIDATION:
            return None
        if mode == Mode.SIMULATION:
            return self.simulated_broker()
        if not (self.alpaca_api_key and self.alpaca_secret_key):
            raise ValueError(f"trading: mode {self.mode!r} needs ALPACA_API_KEY and ALPACA_SECRET_KEY")
        from trading.brokers.alpaca import AlpacaBroker

        return AlpacaBroker(
            self.alpaca_api_key, self.alpaca_secret_key, paper=mode == Mode.PAPER, url_override=self.alpaca_trading_url
        )
