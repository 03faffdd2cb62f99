"""`quantlake estimate` (trading.estimate.pipeline_estimate) on a seeded ledger: each model node is
priced from the tokens its own recorded calls used, at today's prices for its model (not the ledger's
past cost per call, which was paid at another model's or another day's price), and a reflection node
that asks a model adds its lessons: at most one a symbol a run."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from trading.accounts import SubAccount
from trading.estimate import RECENT_CALLS, pipeline_estimate
from trading.events import Event, EventType
from trading.ledger import Ledger
from trading.models import Mode
from trading.pipeline import PipelineConfig, load_pipeline_config

DAY = date(2023, 12, 29)
AT = datetime(2023, 12, 4, 14, 30, tzinfo=UTC)
PRICES = {"fake-small": [1.0, 4.0]}  # USD per million prompt / completion tokens


def _pipeline(tmp_path: Path, *, memory: bool) -> PipelineConfig:
    llm = {"model": "fake-small", "base_url": "http://127.0.0.1:9/v1", "max_output_tokens": 300}
    nodes = [{"id": "analyst", "type": "llm_analyst", "config": llm}]
    if memory:
        nodes.insert(0, {"id": "memory", "type": "reflection", "config": {"llm": llm}})
    nodes.append({"id": "limits", "type": "hard_limits", "when": "trade"})
    file = tmp_path / "pipeline.json"
    file.write_text(json.dumps({"graph": {"nodes": nodes}, "prices": PRICES, "budget": {"per_day": 1.0}}))
    return load_pipeline_config(file)


def _call(agent: str, prompt: int, completion: int, usd: float, model: str = "old-big") -> Event:
    payload = {"agent": agent, "model": model, "prompt_tokens": prompt, "completion_tokens": completion, "usd": usd}
    return Event(type=EventType.COST, run_id="earlier", mode=Mode.VALIDATION, as_of=AT, payload=payload)


def _summary(usd: float, calls: int) -> Event:
    return Event(type=EventType.COST, run_id="earlier", mode=Mode.VALIDATION, as_of=AT, payload={"scope": "run", "run_cost_usd": usd, "model_calls": calls})


def test_each_node_is_priced_from_its_recorded_tokens_and_the_lessons_count(tmp_path: Path) -> None:
    with Ledger("sqlite://") as ledger:
        # Three analyst calls paid $0.50 each on an expensive model; two lessons; the run's summary.
        ledger.append_many([_call("analyst", p, 200, 0.5) for p in (1_000, 1_200, 1_400)] + [_call("memory", 600, 100, 0.2) for _ in range(2)] + [_summary(1.9, 5)])
        report = pipeline_estimate(ledger, _pipeline(tmp_path, memory=True), symbols=5, day=DAY, runs_per_day=2)
    analyst, lessons = report["nodes"]["analyst"], report["nodes"]["memory (lessons)"]
    assert (analyst["prompt_tokens"], analyst["completion_tokens"]) == (1_200, 200), "the mean of its recorded calls"
    assert analyst["usd_per_call"] == pytest.approx((1_200 * 1.0 + 200 * 4.0) / 1e6), "today's price for fake-small, not $0.50"
    assert lessons["calls_per_run"] == 5 and lessons["usd_per_call"] == pytest.approx((600 + 100 * 4.0) / 1e6)
    assert report["model_calls_per_run"] == 10 and report["lesson_calls_per_run"] == 5
    assert report["tokens_per_run"] == pytest.approx(5 * 1_400 + 5 * 700)
    assert report["run_usd"] == pytest.approx(5 * 0.002 + 5 * 0.001) and report["day_usd"] == pytest.approx(2 * 0.015)


def test_only_a_nodes_last_calls_in_its_own_sub_account_count(tmp_path: Path) -> None:
    """The window is the node's last RECENT_CALLS calls; another pipeline's node of the same name is not it.
    A node with no call of its own falls back to the prompt size at its output cap."""
    with Ledger("sqlite://") as ledger:
        mine = SubAccount(ledger, "cautious")
        mine.append_many([_call("analyst", 90_000, 9_000, 1.0)] + [_call("analyst", 2_000, 100, 0.01) for _ in range(RECENT_CALLS)])
        SubAccount(ledger, "bold").append_many([_call("analyst", 50_000, 5_000, 1.0) for _ in range(3)])
        report = pipeline_estimate(mine, _pipeline(tmp_path, memory=False), symbols=2, day=DAY)
        fresh = pipeline_estimate(SubAccount(ledger, "new"), _pipeline(tmp_path, memory=False), symbols=2, day=DAY)
    assert (report["nodes"]["analyst"]["prompt_tokens"], report["nodes"]["analyst"]["completion_tokens"]) == (2_000, 100)
    assert report["lesson_calls_per_run"] == 0 and report["model_calls_per_run"] == 2
    assert fresh["nodes"]["analyst"]["completion_tokens"] == 300 and "no recorded calls" in fresh["basis"]
    assert fresh["nodes"]["analyst"]["usd_per_call"] == pytest.approx((1_000 * 1.0 + 300 * 4.0) / 1e6)
