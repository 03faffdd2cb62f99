"""The one settings object: every QUANTLAKE_* / OPENAI_* / ALPACA_* variable (and DAGSTER_HOME, DAGSTER_EVENT_BATCH_SIZE), read and
validated here; no other orchestration module reads the environment (tests/orchestration/test_settings.py).

Everything below orchestration receives values (the lake root, the mode, a model key as a
`SecretStr`); nothing in assets/, lake/, trading/, strategies/ or backtests/ reads the environment
(tests/orchestration/test_settings.py checks). The assets' own settings (the universe, exchange and
partition start, the screener's, the decide runs' plan of pipelines) are handed over by `pass_settings_down`, which importing
`orchestration` runs before any asset module is loaded. `settings()` reads the environment when
called, not at import, so a test's `monkeypatch.setenv` and a deployment's per-run environment both
apply. A bad value fails
with the variable's name and what it accepts.

Keys are `SecretStr` (never printed by a repr) and reach Dagster resources as `dg.EnvVar`, so the UI
never shows them; a model agent's key is the variable its config names in `api_key_env`
(`OPENAI_API_KEY` by default), looked up by `model_key`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Collection, Mapping
from datetime import date, time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from assets import partitions
from assets.partitions import DEFAULT_UNIVERSE, PartitionSettings
from lake.errors import LakeError
from lake.filesystem import ObjectPath, is_object_store_url, lake_location
from lake.paths import default_lake_root
from lake.screener import ScreenerRules

if TYPE_CHECKING:
    from assets.screener import ScreenerSettings


class SettingsError(ValueError):
    """An environment variable holds a value that cannot work; the message names the variable."""


class Settings(BaseModel):
    """What the environment configures. Field aliases are the variables' names."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    lake_dir: Path | None = Field(None, alias="QUANTLAKE_LAKE_DIR")
    lake_url: str | None = Field(None, alias="QUANTLAKE_LAKE_URL")  # s3://bucket/prefix: the lake on an object store
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")  # a non-AWS store's (MinIO, moto); credentials: AWS_*
    seed: int = Field(7, alias="QUANTLAKE_SEED")
    data_source: Literal["auto", "synthetic", "alpaca", "files"] = Field("auto", alias="QUANTLAKE_DATA_SOURCE")
    fallback: bool = Field(False, alias="QUANTLAKE_FALLBACK")
    files_glob: str | None = Field(None, alias="QUANTLAKE_FILES_GLOB")
    files_tz: str = Field("America/New_York", alias="QUANTLAKE_FILES_TZ")
    files_column_map: str | None = Field(None, alias="QUANTLAKE_FILES_COLUMN_MAP")
    mode: Literal["validation", "simulation", "paper", "live"] = Field("validation", alias="QUANTLAKE_MODE")
    ledger_url: str = Field("", alias="QUANTLAKE_LEDGER_URL")
    ledger_path: str = Field("", alias="QUANTLAKE_LEDGER_PATH")  # a SQLite ledger's file, when no URL is given
    pipeline_file: str = Field("", alias="QUANTLAKE_PIPELINE")
    # A plan of several pipelines side by side (trading.accounts.AccountPlan, YAML/JSON): decide runs with no plan in their config use it.
    pipelines_plan: str = Field("", alias="QUANTLAKE_PIPELINES")
    llm_cache: str = Field("", alias="QUANTLAKE_LLM_CACHE")
    sim_state: str = Field("", alias="QUANTLAKE_SIM_STATE")
    daily_budget_usd: float | None = Field(None, alias="QUANTLAKE_DAILY_BUDGET_USD", ge=0)
    daily_budget_tokens: int | None = Field(None, alias="QUANTLAKE_DAILY_BUDGET_TOKENS", ge=0)
    monthly_budget_usd: float | None = Field(None, alias="QUANTLAKE_MONTHLY_BUDGET_USD", ge=0)
    live_opt_in: bool = Field(False, alias="QUANTLAKE_LIVE_OPT_IN")
    live_trading: str | None = Field(None, alias="QUANTLAKE_LIVE_TRADING")
    log_format: Literal["console", "json"] = Field("console", alias="QUANTLAKE_LOG_FORMAT")
    log_level: str | None = Field(None, alias="QUANTLAKE_LOG_LEVEL")
    openai_model: str = Field("", alias="OPENAI_MODEL")
    openai_base_url: str = Field("", alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, alias="OPENAI_API_KEY")
    alpaca_api_key: SecretStr | None = Field(None, alias="ALPACA_API_KEY")
    alpaca_secret_key: SecretStr | None = Field(None, alias="ALPACA_SECRET_KEY")
    alpaca_data_feed: Literal["iex", "sip"] = Field("iex", alias="ALPACA_DATA_FEED")
    alpaca_data_url: str | None = Field(None, alias="ALPACA_DATA_URL")
    alpaca_trading_url: str | None = Field(None, alias="ALPACA_TRADING_URL")
    exchange: str = Field("XNYS", alias="QUANTLAKE_EXCHANGE")
    news_source_choice: Literal["auto", "synthetic", "alpaca", "files"] = Field("auto", alias="QUANTLAKE_NEWS_SOURCE")
    news_files_glob: str | None = Field(None, alias="QUANTLAKE_NEWS_FILES_GLOB")
    news_files_tz: str = Field("America/New_York", alias="QUANTLAKE_NEWS_FILES_TZ")
    # A close this many times the previous one (or 1/this) blocks its partition unless a split explains it.
    max_jump: float = Field(10.0, alias="QUANTLAKE_MAX_JUMP", gt=1)
    alpaca_trading_stream_url: str | None = Field(None, alias="ALPACA_TRADING_STREAM_URL")
    # Read by the schedules, sensors, partitions, executors and alerts; validated here with the rest.
    universe: str = Field("", alias="QUANTLAKE_UNIVERSE")
    partition_start: str = Field("", alias="QUANTLAKE_PARTITION_START")
    strategy: str = Field("sma_cross", alias="QUANTLAKE_STRATEGY")
    strategy_params: str = Field("{}", alias="QUANTLAKE_STRATEGY_PARAMS")
    decision_timeframe: str | None = Field(None, alias="QUANTLAKE_DECISION_TIMEFRAME")
    decision_times: str = Field("", alias="QUANTLAKE_DECISION_TIMES")
    move_pct: float = Field(2.0, gt=0, alias="QUANTLAKE_MOVE_PCT")
    move_timeframe: str = Field("1m", alias="QUANTLAKE_MOVE_TIMEFRAME")
    executor: Literal["multiprocess", "in_process", "celery", "k8s"] = Field("multiprocess", alias="QUANTLAKE_EXECUTOR")
    celery_broker: str | None = Field(None, alias="QUANTLAKE_CELERY_BROKER")
    celery_backend: str | None = Field(None, alias="QUANTLAKE_CELERY_BACKEND")
    alert_webhook: SecretStr | None = Field(None, alias="QUANTLAKE_ALERT_WEBHOOK")
    alert_lookback_h: float = Field(24.0, ge=0, alias="QUANTLAKE_ALERT_LOOKBACK_H")
    # The missed-session refetch sensor (orchestration/sensors.py).
    refetch_sessions: int = Field(5, ge=1, alias="QUANTLAKE_REFETCH_SESSIONS")
    refetch_grace_min: int = Field(60, ge=0, alias="QUANTLAKE_REFETCH_GRACE_MIN")
    refetch_backoff_min: int = Field(60, ge=0, alias="QUANTLAKE_REFETCH_BACKOFF_MIN")
    refetch_attempts: int = Field(3, ge=1, alias="QUANTLAKE_REFETCH_ATTEMPTS")
    # The schedules (orchestration/schedules.py, news_schedule.py): minutes after the open, between
    # intraday ingests, after the close; the news ticks (HH:MM,HH:MM New York, default 08:45,20:00).
    open_offset_min: int = Field(5, ge=0, alias="QUANTLAKE_OPEN_OFFSET_MIN")
    intraday_minutes: int = Field(15, ge=0, alias="QUANTLAKE_INTRADAY_MINUTES")
    close_offset_min: int = Field(5, ge=0, alias="QUANTLAKE_CLOSE_OFFSET_MIN")
    news_times: str = Field("", alias="QUANTLAKE_NEWS_TIMES")
    # Days each kind of record is kept (-1: forever); unset: RetentionPolicy's default (orchestration/retention.py).
    retention_runs_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_RUNS_DAYS")
    retention_quarantine_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_QUARANTINE_DAYS")
    retention_reports_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_REPORTS_DAYS")
    retention_llm_cache_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_LLM_CACHE_DAYS")
    retention_ledger_archive_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS")
    retention_ledger_compact_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS")
    retention_checkpoint_days: int | None = Field(None, alias="QUANTLAKE_RETENTION_CHECKPOINT_DAYS")
    # The screener (assets/screener.py reads them at each run; validated here with the rest at load).
    screener: bool = Field(False, alias="QUANTLAKE_SCREENER")
    screener_lookback: float | None = Field(None, ge=1, alias="QUANTLAKE_SCREENER_LOOKBACK")
    screener_min_dollar_volume: float | None = Field(None, alias="QUANTLAKE_SCREENER_MIN_DOLLAR_VOLUME")
    screener_min_price: float | None = Field(None, alias="QUANTLAKE_SCREENER_MIN_PRICE")
    screener_max_price: float | None = Field(None, alias="QUANTLAKE_SCREENER_MAX_PRICE")
    screener_max_gap: float | None = Field(None, alias="QUANTLAKE_SCREENER_MAX_GAP")
    screener_min_momentum: float | None = Field(None, alias="QUANTLAKE_SCREENER_MIN_MOMENTUM")
    screener_max_symbols: float | None = Field(None, ge=0, alias="QUANTLAKE_SCREENER_MAX_SYMBOLS")
    # Dagster's own variable, read here too: the CLI prepares and shows the instance's home (orchestration/home.py).
    dagster_home: Path | None = Field(None, alias="DAGSTER_HOME")
    # Dagster's own too (defaulted to 1000 by `orchestration`): read here so a bad value is named before a run.
    event_batch_size: int = Field(1000, ge=0, alias="DAGSTER_EVENT_BATCH_SIZE")

    @field_validator("strategy_params", mode="after")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(parsed, dict):
            raise ValueError("expected a JSON object of parameters, e.g. {\"fast\": 10}")
        return value

    @field_validator("partition_start", mode="after")
    @classmethod
    def _date(cls, value: str) -> str:
        if value.strip():
            try:
                date.fromisoformat(value.strip())
            except ValueError:
                raise ValueError("not a date (YYYY-MM-DD)") from None
        return value

    @field_validator("decision_times", "news_times", mode="after")
    @classmethod
    def _times(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    time.fromisoformat(part)
                except ValueError:
                    raise ValueError(f"{part!r} is not HH:MM (expected HH:MM,HH:MM, New York)") from None
        return value

    @field_validator("data_source", "mode", "log_format", "alpaca_data_feed", "news_source_choice", "executor", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "retention_runs_days", "retention_quarantine_days", "retention_reports_days", "retention_llm_cache_days",
        "retention_ledger_archive_days", "retention_ledger_compact_days", "retention_checkpoint_days", mode="before",
    )
    @classmethod
    def _days(cls, value: object) -> object:
        try:
            days = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            days = None
        if not isinstance(days, int) or (days != -1 and days < 1):
            raise ValueError("expected a whole number of days, at least 1 (or -1 to keep forever)")
        return days

    @field_validator("pipelines_plan", mode="after")
    @classmethod
    def _absolute_plan(cls, value: str) -> str:
        """Kept absolute, so a step process in another working directory finds the same file. Its content
        is validated when a run asks for it (`_plan_file`), not here: a plan being edited must not stop
        what reads the settings without it (the kill switch above all)."""
        return str(Path(value.strip()).expanduser().resolve()) if value.strip() else ""

    @field_validator("log_level", mode="after")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("lake_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @model_validator(mode="after")
    def _lake_location_builds(self) -> Settings:
        if self.lake_url is not None:
            if not is_object_store_url(self.lake_url):
                raise ValueError(f"QUANTLAKE_LAKE_URL: {self.lake_url!r} is not s3://bucket[/prefix] (a local lake is QUANTLAKE_LAKE_DIR)")
            try:
                _ = self.lake_location  # built once here: a malformed URL or endpoint fails the load
            except LakeError as exc:
                raise ValueError(f"QUANTLAKE_LAKE_URL / AWS_ENDPOINT_URL: {exc}") from None
        return self

    @property
    def lake_root(self) -> Path:
        return self.lake_dir or default_lake_root()

    @property
    def lake_location(self) -> Path | ObjectPath:
        """Where the lake's data lives: QUANTLAKE_LAKE_URL's object store (endpoint AWS_ENDPOINT_URL,
        else AWS), which wins over QUANTLAKE_LAKE_DIR; else the local lake_root."""
        if self.lake_url:
            return lake_location(self.lake_url, endpoint=self.aws_endpoint_url or None)
        return self.lake_root

    @property
    def has_alpaca_keys(self) -> bool:
        return bool(self.alpaca_api_key and self.alpaca_secret_key)

    @property
    def source(self) -> Literal["synthetic", "alpaca", "files"]:
        """`auto`: Alpaca when both its keys are set, else the offline generator."""
        if self.data_source == "auto":
            return "alpaca" if self.has_alpaca_keys else "synthetic"
        return self.data_source

    @property
    def news_source(self) -> Literal["synthetic", "alpaca", "files"]:
        """`auto`: Alpaca's news when both its keys are set, else the offline generator."""
        if self.news_source_choice == "auto":
            return "alpaca" if self.has_alpaca_keys else "synthetic"
        return self.news_source_choice

    @property
    def universe_symbols(self) -> tuple[str, ...]:
        """QUANTLAKE_UNIVERSE upper-cased, in its order, each once; unset: the default eight."""
        symbols = [s.strip().upper() for s in self.universe.split(",") if s.strip()]
        return tuple(dict.fromkeys(symbols)) or DEFAULT_UNIVERSE

    @property
    def partition_start_date(self) -> date | None:
        return date.fromisoformat(self.partition_start.strip()) if self.partition_start.strip() else None

    @property
    def screener_rules(self) -> ScreenerRules:
        """The QUANTLAKE_SCREENER_* filters; unset ones are off (ScreenerRules checks their consistency)."""
        return ScreenerRules(
            lookback=int(self.screener_lookback) if self.screener_lookback is not None else 20,
            min_dollar_volume=self.screener_min_dollar_volume or 0.0,
            min_price=self.screener_min_price or 0.0,
            max_price=self.screener_max_price if self.screener_max_price is not None else math.inf,
            max_gap=self.screener_max_gap,
            min_momentum=self.screener_min_momentum,
            max_symbols=int(self.screener_max_symbols) if self.screener_max_symbols is not None else None,
        )

    @property
    def pipelines_plan_file(self) -> Path | None:
        return Path(self.pipelines_plan) if self.pipelines_plan else None

    @property
    def live_confirmed(self) -> bool:
        return self.live_trading == "yes"  # the second opt-in for live trading: only this exact word


PREFIXES = ("QUANTLAKE_", "OPENAI_", "ALPACA_")
NAMES = ("DAGSTER_HOME", "DAGSTER_EVENT_BATCH_SIZE", "AWS_ENDPOINT_URL")  # variables outside the prefixes that Settings reads


def settings(environ: Mapping[str, str] | None = None, only: Collection[str] | None = None) -> Settings:
    """The settings from `environ` (default: the process environment, now). An empty value is unset.

    `only`: read and validate just these variables (the rest keep their defaults), for a caller that
    must not fail on an unrelated bad value, e.g. a log handler asking for QUANTLAKE_LOG_FORMAT.
    """
    env = os.environ if environ is None else environ
    if only is not None:
        values = {k: v for k in only if (v := env.get(k, "")).strip() != ""}
    else:
        values = {k: v for k, v in env.items() if v.strip() != "" and (k.startswith(PREFIXES) or k in NAMES)}
    try:
        # `only` is cached by value (a log handler asks at each line); the whole set is not: the lake
        # directory resolves against the working directory of the moment.
        return _validated(tuple(sorted(values.items()))) if only is not None else Settings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{name}={values.get(name, '')!r}: {err['msg']}")
        raise SettingsError("; ".join(problems)) from None


@functools.lru_cache(maxsize=64)
def _validated(values: tuple[tuple[str, str], ...]) -> Settings:
    # Settings is frozen, so the same values share one validated object (QUANTLAKE_LOG_FORMAT alone:
    # 14 us a call validating, 2 us cached).
    return Settings.model_validate(dict(values))


DAGSTER_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")  # what Dagster's commands accept


def dagster_log_args(values: Settings) -> list[str]:
    """The options that make Dagster's own processes (`dagster dev`, `dagster-webserver`,
    `dagster-daemon run`, `dagster api grpc`) log as QUANTLAKE_LOG_FORMAT and _LEVEL ask: one JSON
    object a line in JSON mode, else Dagster's default (colored) lines; `make ui` passes them."""
    args = ["--log-format", "json"] if values.log_format == "json" else []
    if values.log_level is not None:
        name = str(logging.getLevelName(logging.getLevelName(values.log_level.upper()))).lower()  # WARN -> warning
        if name in DAGSTER_LOG_LEVELS:
            args += ["--log-level", name]
    return args


def lake_root() -> Path:
    """The lake root the environment names now (QUANTLAKE_LAKE_DIR), else data/lake in the repo."""
    return settings().lake_root


def model_key(name: str, environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """The key a model agent's `api_key_env` names (any variable, e.g. a local server's own)."""
    value = (os.environ if environ is None else environ).get(name, "")
    return SecretStr(value) if value else None


# What each asset module asks for: only these are read and validated then, so a bad unrelated value
# does not fail a partition build or a screen (the whole set is validated when resources are built).
PARTITION_VARIABLES = ("QUANTLAKE_UNIVERSE", "QUANTLAKE_EXCHANGE", "QUANTLAKE_PARTITION_START")
SCREENER_VARIABLES = tuple(f.alias for name, f in Settings.model_fields.items() if name.startswith("screener") and f.alias)
PLAN_VARIABLES = ("QUANTLAKE_PIPELINES",)


def pass_settings_down() -> None:
    """Hands the asset modules where their values come from: these settings, read at each use.

    Run by `orchestration/__init__.py`, so before any asset module is imported through orchestration
    (the code location, the CLI, Dagster's step processes); assets never import orchestration.
    """
    partitions.use_settings(_partition_settings)
    from assets import screener  # builds the partitions (its asset is partitioned): after use_settings
    from trading import accounts

    screener.use_settings(_screener_settings)
    accounts.use_plan_source(_plan_file)  # the decide runs' plan (QUANTLAKE_PIPELINES), asked for by assets/trading.py


def _plan_file() -> Path | None:
    """QUANTLAKE_PIPELINES' plan, loaded now: a bad file or field is named with the variable."""
    from trading.accounts import load_account_plan

    path = settings(only=PLAN_VARIABLES).pipelines_plan_file
    if path is not None:
        try:
            load_account_plan(path)
        except ValueError as exc:  # "pipelines plan <file>: <field>: <why>"
            raise SettingsError(f"QUANTLAKE_PIPELINES={str(path)!r}: {exc}") from None
    return path


def _partition_settings() -> PartitionSettings:
    values = settings(only=PARTITION_VARIABLES)
    return PartitionSettings(universe=values.universe_symbols, exchange=values.exchange, start=values.partition_start_date)


def _screener_settings() -> ScreenerSettings:
    from assets.screener import ScreenerSettings

    values = settings(only=SCREENER_VARIABLES)
    return ScreenerSettings(enabled=values.screener, rules=values.screener_rules)
