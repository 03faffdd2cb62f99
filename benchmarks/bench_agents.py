"""Decision-cycle benchmark: 50 symbols through model agents served by a loopback OpenAI server.

Rows:
- rules only: the pipeline's own cost per symbol (contexts given, no model).
- the default graph (analyst -> hard limits -> risk -> validator, LangGraph, one thread per symbol)
  with rule nodes, checkpoints in memory and in a SQLite file: framework ms per symbol per node.
  Target: under 20 ms.
- the team graph (technical analyst, bull/bear debating 2 rounds, trader, risk debate, portfolio
  manager, hard limits) for the same 50 symbols: rules, and every node on a model answering at once;
  ms per node run. Target: under 20 ms.
- model analyst + risk + validator, server answering at once, one call in flight: the framework's
  overhead per symbol per agent (openai/langchain client, prompt building, parsing, events, costs).
  Target: under 20 ms.
- the same with a 200 ms model delay, 1 and 16 calls in flight: concurrency makes the cycle take
  about calls x 200 ms / in-flight, well under 50 x 200 ms per agent.
Run: `.venv/bin/python benchmarks/bench_agents.py`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lake.sources.synthetic import SyntheticSource  # noqa: E402
from strategies.builtin import SMA_CROSS  # noqa: E402
from tests.fakes.openai_server import OpenAIServer, Reply, auto_reply  # noqa: E402
from trading.agents.registry import AgentSpec  # noqa: E402
from trading.agents.team import TEAM_PIPELINE  # noqa: E402
from trading.context import SymbolContext, build_contexts  # noqa: E402
from trading.models import PortfolioSnapshot  # noqa: E402
from trading.pipeline import DecisionPipeline, PipelineConfig  # noqa: E402
from trading.risk import RiskLimits  # noqa: E402

N_SYMBOLS = 50
DELAY_S = 0.2
TARGET_MS = 20.0


def answers(body: dict[str, Any]) -> Reply:
    name = body["response_format"]["json_schema"]["name"]
    payload = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
    if name == "ProposalOut":
        close = payload["close"]
        out: dict[str, Any] = {"action": "BUY", "confidence": 0.8, "rationale": "bench", "entry": close, "stop": close * 0.95, "target1": close * 1.05, "target2": close * 1.1}
    elif name == "RiskOut":
        out = {"approve": True, "keep_fraction": 1.0, "reasons": []}
    else:
        out = {"valid": True, "issues": []}
    return Reply(content=json.dumps(out), prompt_tokens=800, completion_tokens=80)


def contexts() -> tuple[list[SymbolContext], PortfolioSnapshot]:
    symbols = [f"S{i:03d}" for i in range(N_SYMBOLS)]
    bars = SyntheticSource(seed=1).fetch(symbols, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    as_of: datetime = bars["ts"].max()  # type: ignore[assignment]  # polars types max() as any scalar
    snapshot = PortfolioSnapshot(cash=1e9, equity=1e9, start_of_day_equity=1e9, peak_equity=1e9)
    ctxs, _ = build_contexts(bars, SMA_CROSS, SMA_CROSS.params(fast=5, slow=20), as_of, snapshot)
    # Every symbol signals, so every agent is exercised for every symbol.
    return [c.model_copy(update={"signal": {**c.signal, "entry_long": True}}) for c in ctxs], snapshot


def model_config(url: str, in_flight: int) -> PipelineConfig:
    llm = {"model": "gpt-4o-mini", "base_url": url, "max_retries": 0, "timeout_s": 30}
    return PipelineConfig(
        analyst=AgentSpec(type="llm_analyst", config=llm),
        risk=AgentSpec(type="llm_risk", config=llm),
        validator=AgentSpec(type="llm_validator", config=llm),
        max_in_flight=in_flight,
        # Room for every symbol, so every agent judges every symbol (150 calls).
        limits=RiskLimits(max_open_positions=N_SYMBOLS, max_sector_pct=1.0, max_position_pct=0.02, max_trades_per_day=1000),
    )


def timed(pipeline: DecisionPipeline, ctxs: list[SymbolContext], snapshot: PortfolioSnapshot) -> tuple[float, int]:
    start = time.perf_counter()
    result = pipeline.run(ctxs, snapshot, as_of=ctxs[0].as_of)
    return time.perf_counter() - start, result.model_calls


def team_config(url: str | None) -> PipelineConfig:
    raw = json.loads(json.dumps(TEAM_PIPELINE))
    if url:  # every node asks the model
        for node in raw["graph"]["nodes"]:
            if node["type"] != "hard_limits":
                node.setdefault("config", {})["llm"] = {"model": "gpt-4o-mini", "base_url": url, "max_retries": 0, "timeout_s": 30}
    return PipelineConfig.model_validate({**raw, "limits": model_config("", 1).limits.model_dump(), "max_in_flight": 1})


def team_rows(ctxs: list[SymbolContext], snapshot: PortfolioSnapshot) -> list[tuple[str, float, int, str, str]]:
    rows = []
    for label, url in (("rules", None), ("every node on an instant model", "")):
        with OpenAIServer(responder=auto_reply) as server:
            pipeline = DecisionPipeline(team_config(server.base_url if url is not None else None))
            timed(pipeline, ctxs[:3], snapshot)  # warm-up
            before = pipeline.graph.node_runs
            seconds, calls = timed(pipeline, ctxs, snapshot)
            runs = pipeline.graph.node_runs - before
            per_node = seconds / runs * 1000
            rows.append(
                (f"team graph, {label}, 1 in flight", seconds, calls, f"{per_node:.2f} ms per node run ({runs / N_SYMBOLS:.1f} nodes per symbol)", f"target < {TARGET_MS:.0f} ms: {'met' if per_node < TARGET_MS else 'NOT met'}")
            )
    return rows


def main() -> None:
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    ctxs, snapshot = contexts()
    rows = []
    rules = DecisionPipeline(PipelineConfig(limits=model_config("", 1).limits))
    timed(rules, ctxs, snapshot)
    seconds, _ = timed(rules, ctxs, snapshot)
    rows.append(("rules only, 3 agents", seconds, 0, f"{seconds / N_SYMBOLS * 1000:.2f} ms per symbol", ""))
    nodes = len(rules.graph.spec.nodes)
    with tempfile.TemporaryDirectory() as tmp:
        for where, checkpoint in (("in memory", None), ("SQLite file", str(Path(tmp) / "graph.sqlite"))):
            graph = DecisionPipeline(PipelineConfig(limits=model_config("", 1).limits, checkpoint=checkpoint))
            seconds, _ = timed(graph, ctxs, snapshot)
            per_node = seconds / (N_SYMBOLS * nodes) * 1000
            rows.append(
                (f"default graph, {nodes} rule nodes, checkpoints {where}", seconds, 0, f"{per_node:.2f} ms per symbol per node", f"target < {TARGET_MS:.0f} ms: {'met' if per_node < TARGET_MS else 'NOT met'}")
            )
    rows += team_rows(ctxs, snapshot)
    with OpenAIServer(responder=answers) as fast:
        pipeline = DecisionPipeline(model_config(fast.base_url, 1))
        timed(pipeline, ctxs[:3], snapshot)  # warm-up: imports, client construction
        seconds, calls = timed(pipeline, ctxs, snapshot)
        per_call = seconds / calls * 1000
        rows.append(("3 model agents, instant server, 1 in flight", seconds, calls, f"{per_call:.1f} ms per symbol per agent", f"target < {TARGET_MS:.0f} ms: {'met' if per_call < TARGET_MS else 'NOT met'}"))
        seconds, calls = timed(DecisionPipeline(model_config(fast.base_url, 16)), ctxs, snapshot)
        rows.append(("3 model agents, instant server, 16 in flight", seconds, calls, f"{seconds / calls * 1000:.1f} ms per call (wall)", ""))
    for in_flight in (1, 16):
        with OpenAIServer(responder=answers, default_delay=DELAY_S) as slow:
            pipeline = DecisionPipeline(model_config(slow.base_url, in_flight))
            seconds, calls = timed(pipeline, ctxs, snapshot)
            serial = calls * DELAY_S
            rows.append(
                (f"3 model agents, {DELAY_S * 1000:.0f} ms model, {in_flight} in flight", seconds, calls, f"peak in flight {slow.max_in_flight}", f"{serial / seconds:.1f}x faster than {serial:.0f} s serial")
            )
    print(f"\n{N_SYMBOLS} symbols, every one signalling; loopback OpenAI server; real openai/langchain-openai clients\n")
    print("| run | seconds | model calls | figure | note |")
    print("|---|---:|---:|---|---|")
    for name, seconds, calls, figure, note in rows:
        print(f"| {name} | {seconds:.2f} | {calls} | {figure} | {note} |")


if __name__ == "__main__":
    main()
