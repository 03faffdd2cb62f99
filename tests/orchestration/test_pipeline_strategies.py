"""Each pipeline of a plan decides on its own strategy, through decide_job: on the same bars the pipeline
whose strategy enters buys, the one whose strategy (or whose params) says hold sends nothing, a pipeline
that names none decides on the run's, and every decision event names the strategy it came from. A bad
strategy or parameter in the plan fails the run naming the plan file, the pipeline and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from strategies.base import Strategy, StrategyParams, no_levels, no_shorts
from tests.orchestration.test_pipelines_side_by_side import DECISION_BAR, SYMBOLS, _at_eleven, _setup
from trading.accounts import PIPELINE_KEY, load_account_plan
from trading.events import EventType
from trading.ledger import Ledger


class LongIfParams(StrategyParams):
    enter: bool = True


def _long_if(bars: pl.DataFrame, p: LongIfParams) -> pl.DataFrame:
    return bars.with_columns(pl.lit(p.enter).alias("entry_long"), pl.lit(False).alias("exit_long"), *no_shorts(), pl.lit(0.1).alias("size"), *no_levels())


LONG_IF = Strategy(name="long_if", params_model=LongIfParams, compute=_long_if, lookback=lambda p: 1)
HERE = "tests.orchestration.test_pipeline_strategies"


def _run(lake: LakeResource, trading: TradingResource, plan: Path) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    # The run's strategy holds: a pipeline that names none holds with it.
    config = {"strategy": f"{HERE}:LONG_IF", "params": {"enter": False}, "symbols": SYMBOLS, "as_of": DECISION_BAR.isoformat(), "pipelines": str(plan)}
    return defs.resolve_job_def("decide_job").execute_in_process(
        run_config={"ops": {"decision_cycle": {"config": config}}},
        resources={"lake": lake, "trading": trading},
        tags={NOW_TAG: _at_eleven(21).isoformat()},
        raise_on_error=False,
    )


def _plan(plan: Path, slots: list[dict[str, Any]]) -> Path:
    plan.write_text(json.dumps({"pipelines": [{"file": "bold.yaml", "capital": 0.3, **s} for s in slots]}))  # _setup's pipeline file
    return plan


def test_each_pipeline_decides_on_its_own_strategy(tmp_path: Path) -> None:
    lake, trading, plan = _setup(tmp_path)
    _plan(plan, [
        {"id": "eager", "strategy": "tests.trading.always_long:ALWAYS_LONG"},  # enters every symbol
        {"id": "tuned", "strategy": f"{HERE}:LONG_IF", "params": {"enter": True}},  # its own params: enters too
        {"id": "follows"},  # the run's strategy and params: holds
    ])  # fmt: skip
    run = _run(lake, trading, plan)
    assert run.success
    [mat] = run.asset_materializations_for_node("decision_cycle")
    assert mat.metadata["orders_sent"].value == 2 * len(SYMBOLS), "eager and tuned buy every symbol; follows holds"
    with Ledger(trading.ledger_url) as ledger:
        decisions = [e.payload for e in ledger.events(types=[EventType.DECISION.value])]
        orders = [e.payload for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value])]
    by_pipeline = {p: [d for d in decisions if d[PIPELINE_KEY] == p] for p in ("eager", "tuned", "follows")}
    assert {d["strategy"] for d in by_pipeline["eager"]} == {"always_long"}, "each decision names its pipeline's strategy"
    assert {d["strategy"] for d in by_pipeline["tuned"]} == {"long_if"}
    assert {d["strategy"] for d in by_pipeline["follows"]} == {"long_if"}, "a pipeline naming none decides on the run's"
    verdicts = {p: sorted((d["symbol"], d["verdict"]) for d in ds) for p, ds in by_pipeline.items()}
    assert verdicts["eager"] == verdicts["tuned"] == [(s, "EXECUTE") for s in sorted(SYMBOLS)], "their own strategy, their own params: enter"
    assert verdicts["follows"] == [(s, "HOLD") for s in sorted(SYMBOLS)], "the run's strategy and params: hold, on the same bars"
    assert {o[PIPELINE_KEY] for o in orders} == {"eager", "tuned"}
    table = str(mat.metadata["pipelines"].value)
    assert "always_long" in table and "long_if" in table, "the run's table names each pipeline's strategy"


@pytest.mark.parametrize(
    ("slot", "field", "why"),
    [
        ({"strategy": "no_such_strategy"}, "strategy", "unknown strategy 'no_such_strategy'"),
        ({"strategy": f"{HERE}:LONG_IF", "params": {"enter": True, "window": 3}}, "params", "window"),
        ({"params": {"enter": "maybe"}}, "params", "enter"),  # params alone: the run's strategy checks them, at the run
    ],
)
def test_a_bad_strategy_in_the_plan_fails_the_run_naming_the_pipeline(tmp_path: Path, slot: dict[str, Any], field: str, why: str) -> None:
    lake, trading, plan = _setup(tmp_path)
    _plan(plan, [{"id": "eager"}, {"id": "tuned", **slot}])
    run = _run(lake, trading, plan)
    assert not run.success
    [failure] = [e for e in run.all_events if e.is_step_failure]
    message = str(failure.step_failure_data.error.message if failure.step_failure_data.error else "")  # type: ignore[union-attr]
    assert f"pipelines plan {plan}" in message and f"pipeline 'tuned': {field}:" in message and why in message, message
    with Ledger(trading.ledger_url) as ledger:
        assert not list(ledger.events(types=[EventType.DECISION.value])), "nothing decided: the plan failed first"


def test_a_bad_strategy_fails_the_plans_load(tmp_path: Path) -> None:
    """What QUANTLAKE_PIPELINES' check and the end of day read: a named strategy is resolved when the plan loads."""
    plan = _plan(tmp_path / "plan.yaml", [{"id": "eager"}, {"id": "tuned", "strategy": "no_such_strategy"}])
    with pytest.raises(ValueError, match=r"pipelines plan .*plan\.yaml: .*pipeline 'tuned': strategy: unknown strategy 'no_such_strategy'"):
        load_account_plan(plan)
    _plan(plan, [{"id": "tuned", "strategy": f"{HERE}:LONG_IF", "params": {"enter": False}}])
    [slot] = load_account_plan(plan).pipelines
    assert slot.decides_with(LONG_IF, LONG_IF.params()) == (LONG_IF, LongIfParams(enter=False))
