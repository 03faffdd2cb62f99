"""Stored lessons (reflections on closed trades) cost prompt tokens twice in a pipeline with a reflection
node: in each model node's context and again in the notes that node hands every later one. The pre-run
gate's worst case (`DecisionPipeline.estimate`) and `quantlake estimate` (`pipeline_estimate`) count them
by one rule (`DecisionPipeline.prompt_chars`), so a run the lessons push over its budget does not start."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from trading.context import SymbolContext
from trading.cost import CHARS_PER_TOKEN
from trading.estimate import pipeline_estimate
from trading.events import Event, EventType, ReflectionPayload
from trading.ledger import Ledger
from trading.models import Mode
from trading.pipeline import DecisionPipeline, PipelineConfig, load_pipeline_config

AT = datetime(2023, 12, 4, 14, 30, tzinfo=UTC)
PRICES = {"fake-small": [1.0, 4.0]}  # USD per million prompt / completion tokens
LESSON = "Entered on a thin breakout; next time wait for volume to confirm. " * 300  # ~20k characters
SIGNAL = {"entry_long": True, "exit_long": False, "entry_short": False, "exit_short": False}


def _pipeline(tmp_path: Path, per_day: float = 10.0) -> PipelineConfig:
    llm = {"model": "fake-small", "base_url": "http://127.0.0.1:9/v1", "max_output_tokens": 300}
    nodes = [
        {"id": "memory", "type": "reflection"},  # reads the stored lessons into the notes (writes them by rules)
        {"id": "analyst", "type": "llm_analyst", "config": llm},
        {"id": "limits", "type": "hard_limits", "when": "trade"},
    ]
    file = tmp_path / "pipeline.json"
    file.write_text(json.dumps({"graph": {"nodes": nodes}, "prices": PRICES, "budget": {"per_day": per_day}}))
    return load_pipeline_config(file)


def _reflection() -> dict[str, object]:
    closed = AT - timedelta(days=2)
    return {"stamped_at": AT - timedelta(days=1), "side": "long", "quantity": 10.0, "opened_at": closed - timedelta(days=3), "closed_at": closed,
            "entry_price": 100.0, "exit_price": 98.0, "pnl": -20.0, "return_pct": -0.02, "rationale": "breakout", "lesson": LESSON, "by": "rules"}  # fmt: skip


def _context(lessons: bool) -> SymbolContext:
    return SymbolContext(symbol="AAPL", as_of=AT, strategy="sma_cross", close=100.0, signal=SIGNAL, features={}, reflections=[_reflection()] if lessons else [])


def _usd_of(chars: int) -> float:
    """The model's price of `chars` more prompt characters (one call), from the test's own price table."""
    return chars / CHARS_PER_TOKEN * PRICES["fake-small"][0] / 1e6


def test_the_gates_worst_case_counts_stored_lessons_in_the_context_and_in_the_notes(tmp_path: Path) -> None:
    decider = DecisionPipeline(_pipeline(tmp_path))
    without, with_lessons = decider.estimate([_context(False)]), decider.estimate([_context(True)])
    assert with_lessons["usd_worst_case"] > without["usd_worst_case"]
    # One model node, one call: the lesson's text is paid at least twice (context + the reflection node's notes).
    assert with_lessons["usd_worst_case"] - without["usd_worst_case"] >= 2 * _usd_of(len(LESSON)) * 0.98
    assert decider.prompt_chars(_context(True)) - decider.prompt_chars(_context(False)) >= 2 * len(LESSON)


def test_the_gate_refuses_a_run_the_stored_lessons_push_over_the_budget(tmp_path: Path) -> None:
    """The day's budget fits the run without lessons and with the lessons counted once, not twice."""
    probe = DecisionPipeline(_pipeline(tmp_path))
    base = probe.estimate([_context(False)])["usd_worst_case"]
    budget = base + 1.5 * _usd_of(len(LESSON))
    decider = DecisionPipeline(_pipeline(tmp_path, per_day=budget))
    day = AT.date()
    fits = decider.budget_gate(decider.estimate([_context(False)]), day=day, spent_today=0.0, spent_month=0.0)
    assert fits.reason is None
    refused = decider.budget_gate(decider.estimate([_context(True)]), day=day, spent_today=0.0, spent_month=0.0)
    assert refused.reason is not None and refused.reason.startswith("daily budget")


def _stored(ledger: Ledger, symbol: str, lesson: str) -> None:
    r = _reflection()
    payload = ReflectionPayload(symbol=symbol, closing_fill=f"fill-{symbol}", **{k: v for k, v in r.items() if k != "stamped_at"} | {"lesson": lesson})  # type: ignore[arg-type]
    ledger.append_many([Event(type=EventType.REFLECTION, run_id="earlier", mode=Mode.VALIDATION, symbol=symbol, as_of=AT - timedelta(days=1), payload=payload.model_dump(mode="json"))])


def test_quantlake_estimate_counts_the_stored_lessons_by_the_same_rule(tmp_path: Path) -> None:
    """No recorded call yet: the analyst's prompt is the default size plus what the longest stored lessons
    add to it by the gate's rule (both copies), and the day's figure grows with it."""
    config = _pipeline(tmp_path)
    with Ledger("sqlite://") as ledger:
        plain = pipeline_estimate(ledger, config, symbols=3, day=date(2023, 12, 4))
        _stored(ledger, "AAPL", "short lesson")
        _stored(ledger, "MSFT", LESSON)
        taught = pipeline_estimate(ledger, config, symbols=3, day=date(2023, 12, 4))
    grown = taught["nodes"]["analyst"]["prompt_tokens"] - plain["nodes"]["analyst"]["prompt_tokens"]
    expected = DecisionPipeline(config).prompt_chars(_context(True)) - DecisionPipeline(config).prompt_chars(_context(False))
    assert grown == pytest.approx(expected / CHARS_PER_TOKEN, abs=2) and grown >= 2 * len(LESSON) / CHARS_PER_TOKEN
    assert taught["run_usd"] > plain["run_usd"] and "of stored lessons" in taught["basis"]


def _lesson_writer(tmp_path: Path, per_day: float = 10.0) -> PipelineConfig:
    """The reflection node asks a model for its lessons; no other node does."""
    llm = {"model": "fake-small", "base_url": "http://127.0.0.1:9/v1", "max_output_tokens": 300}
    nodes = [{"id": "memory", "type": "reflection", "config": {"llm": llm}}, {"id": "analyst", "type": "rules_analyst"}, {"id": "limits", "type": "hard_limits", "when": "trade"}]
    file = tmp_path / "lessons.json"
    file.write_text(json.dumps({"graph": {"nodes": nodes}, "prices": PRICES, "budget": {"per_day": per_day}}))
    return load_pipeline_config(file)


def test_lessons_still_to_write_are_in_the_worst_case_and_the_gate_refuses_what_they_push_over(tmp_path: Path) -> None:
    """Three closed trades with no lesson yet: three model calls, each at the lesson prompt and the output cap."""
    from trading.pipeline import LESSON_PROMPT_CHARS

    decider = DecisionPipeline(_lesson_writer(tmp_path))
    per_lesson = (LESSON_PROMPT_CHARS / CHARS_PER_TOKEN * PRICES["fake-small"][0] + 300 * PRICES["fake-small"][1]) / 1e6
    none, three = decider.estimate([_context(False)]), decider.estimate([_context(False)], lessons=3)
    assert none["model_calls_max"] == 0 and none["usd_worst_case"] == 0.0, "rule nodes cost nothing"
    assert three["model_calls_max"] == three["lesson_calls"] == 3
    assert three["usd_worst_case"] == pytest.approx(3 * per_lesson) and three["usd"] == pytest.approx(3 * per_lesson)
    tight = DecisionPipeline(_lesson_writer(tmp_path, per_day=2.5 * per_lesson))
    day = AT.date()
    assert tight.budget_gate(tight.estimate([_context(False)], lessons=2), day=day, spent_today=0.0, spent_month=0.0).reason is None
    refused = tight.budget_gate(tight.estimate([_context(False)], lessons=3), day=day, spent_today=0.0, spent_month=0.0)
    assert refused.reason is not None and refused.reason.startswith("daily budget")
