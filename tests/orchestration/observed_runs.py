"""decide_job runs on the application's resources (orchestration/run_context.py), for the logging,
metrics and alert tests: a small offline lake, a simulated account, a run clock per run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from assets import trading
from assets.clock import NOW_TAG
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from orchestration.jobs import decide_job
from orchestration.run_context import ObservedLakeResource, ObservedTradingResource

NY = ZoneInfo("America/New_York")
SYMBOLS = ["AAPL", "MSFT"]
STRATEGY = "tests.trading.always_long:ALWAYS_LONG"


def write_lake(root: Path, crash: float = 1.0) -> Path:
    """1m bars for SYMBOLS on 2024-11-25/26; `crash` scales every price from 10:30 New York on the 25th."""
    bars = SyntheticSource(seed=7).fetch(SYMBOLS, "1m", datetime(2024, 11, 25, tzinfo=UTC), datetime(2024, 11, 27, tzinfo=UTC))
    if crash != 1.0:
        hit = pl.col("ts") >= datetime(2024, 11, 25, 10, 30, tzinfo=NY).astimezone(UTC)
        bars = bars.with_columns(*(pl.when(hit).then(pl.col(c) * crash).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "vwap")))
    replace_partitions(root, "bars", "1m", bars, period="date")
    return root


def resources(lake_root: Path, tmp: Path, mode: str = "simulation") -> dict[str, Any]:
    return {
        "lake": ObservedLakeResource(root=str(lake_root)),
        "trading": ObservedTradingResource(mode=mode, ledger_url=ledger_url(tmp), sim_state_file=str(tmp / "sim.json")),
    }


def ledger_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'ledger.sqlite'}"


def decide(res: dict[str, Any], now: datetime, instance: dg.DagsterInstance, **tags: str) -> dg.ExecuteInProcessResult:
    """One decide_job run (in process) at the run clock `now`."""
    job = dg.Definitions(assets=[trading.decision_cycle], jobs=[decide_job], resources=res).resolve_job_def("decide_job")
    result = job.execute_in_process(
        run_config={"ops": {"decision_cycle": {"config": {"strategy": STRATEGY, "symbols": SYMBOLS, "timeframe": "1m"}}}},
        tags={NOW_TAG: now.isoformat(), **tags},
        instance=instance,
    )
    assert result.success
    return result


def kill_switch(res: dict[str, Any], now: datetime, instance: dg.DagsterInstance, reason: str = "test") -> dg.ExecuteInProcessResult:
    """kill_switch_job (in process) at the run clock `now`."""
    from orchestration.jobs import kill_switch_job

    job = dg.Definitions(jobs=[kill_switch_job], resources={"trading": res["trading"]}).resolve_job_def("kill_switch_job")
    result = job.execute_in_process(
        run_config={"ops": {"kill_switch_op": {"config": {"reason": reason}}}}, tags={NOW_TAG: now.isoformat()}, instance=instance
    )
    assert result.success
    return result


def resume(res: dict[str, Any], now: datetime, instance: dg.DagsterInstance, by: str = "tester") -> dg.ExecuteInProcessResult:
    """resume_job (in process) at the run clock `now`."""
    from orchestration.jobs import resume_job

    job = dg.Definitions(jobs=[resume_job], resources={"trading": res["trading"]}).resolve_job_def("resume_job")
    result = job.execute_in_process(run_config={"ops": {"resume_op": {"config": {"by": by}}}}, tags={NOW_TAG: now.isoformat()}, instance=instance)
    assert result.success
    return result
