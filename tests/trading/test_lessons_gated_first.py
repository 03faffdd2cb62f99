"""A step's reflection lessons pass the pre-run budget gate before any model is asked for them: lessons
whose worst case alone is over the day's budget are written by the rules, with no model request."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.always_long import ALWAYS_LONG
from tests.trading.test_multi_timeframe_filter import RISING, daily_bars
from trading.cost import CHARS_PER_TOKEN
from trading.events import Event, EventType
from trading.ledger import Ledger
from trading.models import Mode
from trading.pipeline import LESSON_PROMPT_CHARS, DecisionPipeline, PipelineConfig

PRICES = {"fake-small": [1.0, 4.0]}  # USD per million prompt / completion tokens
MAX_OUTPUT = 300
PER_LESSON = (LESSON_PROMPT_CHARS / CHARS_PER_TOKEN * PRICES["fake-small"][0] + MAX_OUTPUT * PRICES["fake-small"][1]) / 1e6


def _lesson_writer(base_url: str, per_day: float) -> PipelineConfig:
    """Only the reflection node asks a model (for its lessons); the decisions are the rules'."""
    llm = {"model": "fake-small", "base_url": base_url, "max_output_tokens": MAX_OUTPUT, "max_retries": 0, "timeout_s": 5.0}
    nodes = [{"id": "memory", "type": "reflection", "config": {"llm": llm}}, {"id": "analyst", "type": "rules_analyst"}, {"id": "limits", "type": "hard_limits", "when": "trade"}]
    limits = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.2}
    return PipelineConfig.model_validate({"graph": {"nodes": nodes}, "prices": PRICES, "budget": {"per_day": per_day}, "limits": limits})


def _round_trips(ledger: Ledger, symbols: list[str], closed: datetime) -> None:
    """A bought and sold position per symbol, closed before the decision bar: each a lesson to write."""
    events = []
    for n, symbol in enumerate(symbols):
        for leg, (side, price, ts) in enumerate([("buy", 100.0, closed - timedelta(days=3)), ("sell", 95.0, closed)]):
            fill = {"fill_id": f"f{n}{leg}", "client_order_id": f"c{n}{leg}", "symbol": symbol, "side": side, "quantity": 10.0, "price": price, "commission": 0.0, "ts": ts.isoformat()}
            events.append(Event(type=EventType.FILL, run_id="earlier", mode=Mode.VALIDATION, symbol=symbol, as_of=ts, payload=fill, event_id=f"fill-{n}-{leg}"))
    ledger.append_many(events)


def _answers(body: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps({"lesson": "model lesson"}), prompt_tokens=200, completion_tokens=20)


def _step(tmp_path: Path, base_url: str, closes: list[str], per_day: float) -> list[str]:
    """One decision step with `closes` round trips pending; the reflections' `by`, one per trip."""
    from trading.step import trading_step

    bars = daily_bars({"UP": RISING})
    as_of: datetime = bars["ts"].max()  # type: ignore[assignment]
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        _round_trips(ledger, closes, as_of - timedelta(days=1))
        decider = DecisionPipeline(_lesson_writer(base_url, per_day))
        trading_step(ledger=ledger, broker=None, decider=decider, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), bars=bars, as_of=as_of,
                     now=as_of + timedelta(days=1), mode=Mode.VALIDATION, run_id="r")  # fmt: skip
        return sorted(str(e.payload["by"]) for e in ledger.events(types=[EventType.REFLECTION.value]))


def test_lessons_whose_worst_case_is_over_the_budget_ask_no_model_and_are_written_by_the_rules(tmp_path: Path) -> None:
    """The day fits two lessons' worst case, not three: the old order asked the model for the first ones."""
    with OpenAIServer(responder=_answers) as server:
        by = _step(tmp_path, server.base_url, ["A", "B", "C"], per_day=2.5 * PER_LESSON)
        assert server.requests == [], "a refused gate asks no model"
    assert by == ["rules", "rules", "rules"]


def test_lessons_the_budget_fits_are_asked_of_the_model(tmp_path: Path) -> None:
    with OpenAIServer(responder=_answers) as server:
        by = _step(tmp_path, server.base_url, ["A", "B"], per_day=2.5 * PER_LESSON)
        assert len(server.requests) == 2
    assert by == ["model", "model"]
