"""One decide run with a plan of pipelines, through the job users run (shared by the plan tests)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource

ALWAYS_LONG = "tests.trading.always_long:ALWAYS_LONG"


def decide_with_plan(
    lake: LakeResource, trading: TradingResource, plan: Path, as_of: datetime, now: datetime, symbols: list[str], strategy: str = ALWAYS_LONG
) -> dict[str, Any]:
    """`decide_job` on the plan at `now` (decisions at `as_of`'s bar); its materialization's metadata as values."""
    from orchestration.definitions import defs

    config = {"strategy": strategy, "symbols": symbols, "as_of": as_of.isoformat(), "pipelines": str(plan)}
    run = defs.resolve_job_def("decide_job").execute_in_process(
        run_config={"ops": {"decision_cycle": {"config": config}}}, resources={"lake": lake, "trading": trading}, tags={NOW_TAG: now.isoformat()}
    )
    assert run.success
    [mat] = run.asset_materializations_for_node("decision_cycle")
    return {k: v.value for k, v in mat.metadata.items()}


def end_of_day_with_plan(lake: LakeResource, trading: TradingResource, plan: Path, now: datetime, symbols: list[str]) -> dict[str, Any]:
    """`end_of_day_report` on the plan at `now`; its materialization's metadata as values."""
    import dagster as dg

    from assets.trading import end_of_day_report

    result = dg.materialize(
        [end_of_day_report], resources={"lake": lake, "trading": trading}, tags={NOW_TAG: now.isoformat()},
        run_config={"ops": {"end_of_day_report": {"config": {"symbols": symbols, "pipelines": str(plan)}}}},
    )  # fmt: skip
    [mat] = result.asset_materializations_for_node("end_of_day_report")
    return {k: v.value for k, v in mat.metadata.items()}
