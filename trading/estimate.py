"""Cost before spending, for `quantlake estimate`: a pipeline's expected spend per run, day and month
from its graph (model calls per symbol, and the reflection lessons: their calls, and their text in later
prompts by the pre-run gate's rule; a model node's other timeframes, their bars in its prompts) and the tokens each node used in the ledger's recorded calls, priced
at today's prices, against its budgets.

No Dagster here; the caller gives the day (no wall clock) and how often the pipeline runs.
"""

from __future__ import annotations

import calendar
from collections import deque
from dataclasses import dataclass
from datetime import date
from typing import Any

from lake.calendar import trading_days
from trading.agents.reflection import memory_of, recall_entry, visible
from trading.context import SymbolContext, frames_prompt_chars
from trading.cost import PriceTable, estimate_tokens, period_estimate, pre_run_check, spent_in_month
from trading.events import EventType
from trading.ledger import Ledger, project
from trading.pipeline import DecisionPipeline, PipelineConfig

# Before any recorded call: a prompt of this many characters (a symbol's context and the instructions,
# as `DecisionPipeline.estimate` adds 1,500 to the context) at each node's output cap.
PROMPT_CHARS_WITHOUT_HISTORY = 4_000
RECENT_CALLS = 20  # a node's last recorded calls whose tokens it is estimated from


@dataclass(frozen=True)
class NodeEstimate:
    """One model node's calls a run and one call's tokens and price (recorded, else from the prompt size)."""

    calls_per_run: int
    prompt_tokens: float
    completion_tokens: float
    usd_per_call: float
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("calls_per_run", "prompt_tokens", "completion_tokens", "usd_per_call", "basis")}


def sessions_in_month(day: date, exchange: str = "XNYS") -> int:
    last = calendar.monthrange(day.year, day.month)[1]
    return len(trading_days(day.replace(day=1), day.replace(day=last), exchange))


def recorded_tokens(ledger: Ledger, last: int = RECENT_CALLS) -> dict[str, list[tuple[int, int]]]:
    """Per agent (the node's name), the (prompt, completion) tokens of its last `last` model calls:
    the ledger's per-call cost events, graph nodes and reflection lessons alike."""
    out: dict[str, deque[tuple[int, int]]] = {}
    for _type, payload in ledger.payloads([EventType.COST]):
        agent = payload.get("agent")
        if payload.get("scope") == "run" or not agent:
            continue
        calls = out.setdefault(str(agent), deque(maxlen=last))
        calls.append((int(payload.get("prompt_tokens") or 0), int(payload.get("completion_tokens") or 0)))
    return {agent: list(calls) for agent, calls in out.items()}


def stored_lessons_chars(ledger: Ledger, decider: DecisionPipeline) -> int:
    """What the ledger's stored lessons add to a model node's prompt, at most over the symbols, by the
    pre-run gate's own rule (`DecisionPipeline.prompt_chars`: in the context and again in the reflection
    node's notes); 0 without a reflection node or a stored lesson."""
    memory = memory_of(decider)
    if memory is None:
        return 0
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for event in ledger.events(types=[EventType.REFLECTION.value]):
        by_symbol.setdefault(str(event.symbol), []).append(recall_entry(event))
    extra = 0
    for symbol, entries in by_symbol.items():
        as_of = max(max(e["stamped_at"], e["closed_at"]) for e in entries)  # every one of them known
        bare = SymbolContext(symbol=symbol, as_of=as_of, strategy="", close=0.0, signal={}, features={})
        kept = visible(bare.model_copy(update={"reflections": entries}), memory.config.last)
        extra = max(extra, decider.prompt_chars(bare.model_copy(update={"reflections": kept})) - decider.prompt_chars(bare))
    return extra


def _node(
    name: str,
    caller: Any,
    calls: int,
    prices: PriceTable,
    recorded: list[tuple[int, int]],
    recent_costs: list[float],
    lessons_chars: int = 0,
    frames_chars: int = 0,
) -> NodeEstimate:
    """Its own recorded tokens at its model's price today; with none, the ledger's recent cost per call
    (ledgers with run summaries only), else a `PROMPT_CHARS_WITHOUT_HISTORY` prompt (and the stored
    lessons it would carry, `lessons_chars`, and the other timeframes it declares, `frames_chars`) at its output cap."""
    model, cap = caller.settings.model, caller.settings.max_output_tokens
    if recorded:
        prompt, completion = (sum(t[i] for t in recorded) / len(recorded) for i in (0, 1))
        return NodeEstimate(calls, prompt, completion, _priced(prices, model, prompt, completion), f"recorded tokens: mean of {name}'s last {len(recorded)} calls, at {model}'s price")
    prompt, completion = float(estimate_tokens(PROMPT_CHARS_WITHOUT_HISTORY + lessons_chars + frames_chars)), float(cap)
    if recent_costs:
        usd, basis = sum(recent_costs) / len(recent_costs), f"no call of {name} recorded: the ledger's mean cost per call over the last {len(recent_costs)} runs"
        return NodeEstimate(calls, prompt, completion, usd, basis)
    lessons = f" and {lessons_chars} of stored lessons" if lessons_chars else ""
    lessons += f" and {frames_chars} of its other timeframes' bars" if frames_chars else ""
    basis = f"no recorded calls: a {PROMPT_CHARS_WITHOUT_HISTORY}-character prompt{lessons} at {name}'s output cap"
    return NodeEstimate(calls, prompt, completion, _priced(prices, model, prompt, completion), basis)


def _priced(prices: PriceTable, model: str, prompt: float, completion: float) -> float:
    """USD for fractional (mean) token counts; 0 for an unpriced model (its tokens still count)."""
    price = prices.price(model)
    return 0.0 if price is None else (prompt * price[0] + completion * price[1]) / 1_000_000


def pipeline_estimate(ledger: Ledger, pipeline: PipelineConfig, *, symbols: int, day: date, runs_per_day: int = 1, exchange: str = "XNYS") -> dict[str, Any]:
    """Per run at most one call per model node per symbol (a debater's rounds each) and, with a
    reflection node that asks a model, at most one lesson a symbol (a run closes a symbol's position at
    most once); each node's calls at its recorded tokens per call; per day and month by how often it runs."""
    decider = DecisionPipeline(pipeline)
    projection = project(ledger)
    spent_today, recent_costs = projection.spent_on(day)
    recorded = recorded_tokens(ledger)
    lessons_chars = stored_lessons_chars(ledger, decider)
    nodes: dict[str, NodeEstimate] = {}
    for agent in decider.graph.agents.values():
        if (caller := getattr(agent, "caller", None)) is not None and (calls := symbols * int(getattr(agent, "calls_per_symbol", 1))):
            frames = frames_prompt_chars(getattr(agent, "frames", None) or {})  # the bars of other timeframes its prompt carries
            nodes[agent.name] = _node(agent.name, caller, calls, decider.prices, recorded.get(agent.name, []), recent_costs, lessons_chars, frames)
    memory = memory_of(decider)
    lessons = 0
    if memory is not None and (caller := getattr(memory, "caller", None)) is not None:
        lessons = symbols
        nodes[f"{memory.name} (lessons)"] = _node(memory.name, caller, lessons, decider.prices, recorded.get(memory.name, []), recent_costs)
    calls = sum(n.calls_per_run for n in nodes.values())
    run_usd = sum(n.calls_per_run * n.usd_per_call for n in nodes.values())
    periods = period_estimate(run_usd, run_usd, runs_per_day, sessions_in_month(day, exchange))
    check = pre_run_check(pipeline.budget, run_usd, day=day, spent_today=spent_today, spent_month=spent_in_month(dict(projection.spent), day))
    return {
        "pipeline": pipeline.name,
        "model_calls_per_run": calls,
        "lesson_calls_per_run": lessons,
        "tokens_per_run": sum(n.calls_per_run * (n.prompt_tokens + n.completion_tokens) for n in nodes.values()),
        "usd_per_call": run_usd / calls if calls else 0.0,
        "basis": "; ".join(f"{name}: {n.basis}" for name, n in nodes.items()) or "no model node",
        "nodes": {name: n.as_dict() for name, n in nodes.items()},
        "runs_per_day": runs_per_day,
        "sessions_in_month": sessions_in_month(day, exchange),
        **{k: v for k, v in periods.items() if not k.endswith("worst_case")},
        "budget": pipeline.budget.model_dump(),
        **{k: v for k, v in check.as_dict().items() if k != "run_worst_case_usd"},
    }
