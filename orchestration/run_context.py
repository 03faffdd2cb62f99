"""Every log line of a run carries its run, cycle and trace ids, set when the run's resources start.

The lake and trading resources are built here as subclasses whose `setup_for_execution` configures
logging (QUANTLAKE_LOG_FORMAT) and binds the ids to structlog's context, so the application's own
loggers (`quantlake.*`, `trading.*`, `lake.*`, `backtests.*`) print them in the run's process, in
process or in a multiprocess step alike. Every asset and op uses one of these resources.

- run_id: the Dagster run.
- cycle_id: what the run is one attempt at, the same for a retry or a re-execution: the run key of
  the schedule tick or sensor that launched it, else `<job>@<run's now>` (the `quantlake/now` tag or the
  scheduled time), else the first run of a re-execution, else the run id.
- trace_id: the cycle id as 32 hex digits (W3C trace-id shape), for a tracing backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import structlog

from assets.resources import LakeResource, TradingResource
from lake.filesystem import ObjectPath
from orchestration.observability import cycle_id as cycle_id  # re-exported: what a rerun repeats
from orchestration.observability import ensure_logging, get_logger
from orchestration.observability import run_ids as observed_ids
from orchestration.settings import model_key, settings

if TYPE_CHECKING:
    from trading.pipeline import PipelineConfig

_IDS = ("run_id", "cycle_id", "trace_id", "job", "partition", "step")


def run_ids(run: dg.DagsterRun) -> dict[str, str]:
    return observed_ids(run.run_id, run.job_name, run.tags)


class RunContextMixin:
    """Configures logging and binds the run's ids for the rest of the step (unbound at teardown)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        ensure_logging()
        run = context.dagster_run
        if run is None:  # a resource built outside a run (tests, the CLI's own reads)
            return
        ids = run_ids(run)
        step = context.log.metadata.get("step_key") if context.log is not None else None
        if step:
            ids["step"] = step
        bound = structlog.contextvars.get_contextvars()
        if bound.get("run_id") != run.run_id:  # two observed resources in one step bind once
            structlog.contextvars.unbind_contextvars(*_IDS)  # nothing left over from an earlier run
            structlog.contextvars.bind_contextvars(**ids)
            mode = {"mode": run.tags["quantlake/mode"]} if "quantlake/mode" in run.tags else {}
            get_logger("quantlake.run").info("run step started", **mode)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is not None and structlog.contextvars.get_contextvars().get("run_id") == run.run_id:
            get_logger("quantlake.run").info("run step finished")
            structlog.contextvars.unbind_contextvars(*_IDS)


class ObservedLakeResource(RunContextMixin, LakeResource):
    """`LakeResource` that sets up the run's logging context; an empty root is the settings' lake
    (read when used, not frozen when the code location loaded): QUANTLAKE_LAKE_URL's object store
    (endpoint AWS_ENDPOINT_URL), else QUANTLAKE_LAKE_DIR, else data/lake in the repo."""

    def default_location(self) -> Path | ObjectPath:
        return settings().lake_location


class ObservedTradingResource(RunContextMixin, TradingResource):
    """`TradingResource` that sets up the run's logging context and passes the model agents their keys."""

    def pipeline(self) -> PipelineConfig:
        try:
            return pipeline_with_keys(super().pipeline())
        except ValueError as exc:  # a key written in the file
            raise ValueError(f"pipeline config {self.pipeline_file or '(default)'}: {exc}") from None


def pipeline_with_keys(config: PipelineConfig) -> PipelineConfig:
    """Each model agent's config with the key its `api_key_env` (and each fallback's) names, read from
    the environment here: the trading layer receives the value (a SecretStr), never reads it."""
    from trading.agents.llm import LLMSettings, with_keys
    from trading.agents.registry import agent_types

    known = agent_types()
    update = {}
    for role in ("analyst", "risk", "validator"):
        spec = getattr(config, role)
        kind = known.get(spec.type)
        if kind is not None and issubclass(kind.config_model, LLMSettings):
            update[role] = spec.model_copy(update={"config": with_keys(spec.config, model_key)})
    return config.model_copy(update=update) if update else config
