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
