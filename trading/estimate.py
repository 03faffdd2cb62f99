"""Cost before spending, for `quantlake estimate`: a pipeline's expected spend per run, day and month
from its graph (model calls per symbol) and the ledger's recorded cost per call, against its budgets.

No Dagster here; the caller gives the day (no wall clock) and how often the pipeline runs.
"""

from __future__ import annotations

import calendar
from datetime import date
from typing import Any

from lake.calendar import trading_days
from trading.cost import estimate_call_cost, period_estimate, pre_run_check, spent_in_month
from trading.ledger import Ledger, project
from trading.pipeline import DecisionPipeline, PipelineConfig

# Before any recorded call: a prompt of this many characters (a symbol's context and the instructions,
# as `DecisionPipeline.estimate` adds 1,500 to the context) at each node's output cap.
PROMPT_CHARS_WITHOUT_HISTORY = 4_000


def sessions_in_month(day: date, exchange: str = "XNYS") -> int:
    last = calendar.monthrange(day.year, day.month)[1]
    return len(trading_days(day.replace(day=1), day.replace(day=last), exchange))


def pipeline_estimate(ledger: Ledger, pipeline: PipelineConfig, *, symbols: int, day: date, runs_per_day: int = 1, exchange: str = "XNYS") -> dict[str, Any]:
    """Per run at most one call per model node per symbol (a debater's rounds each), priced at the
    ledger's recent mean cost per call, else from the prompt size; per day and month by how often it runs."""
    decider = DecisionPipeline(pipeline)
    nodes = [a for a in decider.graph.agents.values() if hasattr(a, "caller")]
    calls = symbols * sum(int(getattr(a, "calls_per_symbol", 1)) for a in nodes)
    projection = project(ledger)
    spent_today, recent = projection.spent_on(day)
    if recent:
        per_call, basis = sum(recent) / len(recent), f"recorded: mean of the last {len(recent)} runs' cost per call"
    elif nodes:
        prices = [estimate_call_cost(decider.prices, a.caller.settings.model, PROMPT_CHARS_WITHOUT_HISTORY, a.caller.settings.max_output_tokens) for a in nodes]
        per_call, basis = sum(prices) / len(prices), f"no recorded calls: a {PROMPT_CHARS_WITHOUT_HISTORY}-character prompt at each node's output cap"
    else:
        per_call, basis = 0.0, "no model node"
    run_usd = per_call * calls
    periods = period_estimate(run_usd, run_usd, runs_per_day, sessions_in_month(day, exchange))
    check = pre_run_check(pipeline.budget, run_usd, day=day, spent_today=spent_today, spent_month=spent_in_month(dict(projection.spent), day))
    return {
        "pipeline": pipeline.name,
        "model_calls_per_run": calls,
        "usd_per_call": per_call,
        "basis": basis,
        "runs_per_day": runs_per_day,
        "sessions_in_month": sessions_in_month(day, exchange),
        **{k: v for k, v in periods.items() if not k.endswith("worst_case")},
        "budget": pipeline.budget.model_dump(),
        **{k: v for k, v in check.as_dict().items() if k != "run_worst_case_usd"},
    }
