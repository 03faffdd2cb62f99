"""A paper session's model spend is real money spent on the run's day: it counts against the pipeline's
budget in the trading ledger (decide runs' and earlier sessions' spend there stops the session's model
requests), and goes to the trading ledger afterwards, once a run, stamped at the run's clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lake.sources.synthetic import SyntheticSource
from strategies.registry import load_strategy
from tests.fakes.openai_server import OpenAIServer, Reply
from trading.events import Event, EventType
from trading.ledger import Ledger, project
from trading.models import Mode
from trading.pipeline import PipelineConfig, load_pipeline_config
from trading.session import SpendAtNow, run_simulated_session

SYMBOLS = ["AAPL", "MSFT"]
NOW = datetime(2024, 1, 15, 15, 0, tzinfo=UTC)  # the run's clock: the session replays December 2023
CALL_USD = 10.1  # each answer: 10,000 prompt and 100 completion tokens at $1000 per 1M
DAILY_BUDGET = 15.0  # one bar's worst case fits in a fresh day; two bars' spend does not


def _holds(body: dict[str, Any]) -> Reply:
    answer = {"action": "HOLD", "confidence": 0.5, "rationale": "wait", "entry": None, "stop": None, "target1": None, "target2": None}
    return Reply(content=json.dumps(answer), prompt_tokens=10_000, completion_tokens=100)


def _pipeline(tmp_path: Path, server: OpenAIServer) -> PipelineConfig:
    llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
    pipeline = {
        "graph": {"nodes": [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "limits", "type": "hard_limits", "when": "trade"}]},
        "prices": {"fake-small": [1000.0, 1000.0]},
        "budget": {"per_day": DAILY_BUDGET},
        "checkpoint": "memory",
    }
    (tmp_path / "pipeline.json").write_text(json.dumps(pipeline))
    return load_pipeline_config(tmp_path / "pipeline.json")


def _bars() -> pl.DataFrame:
    return SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 11, 20, tzinfo=UTC), datetime(2023, 12, 9, tzinfo=UTC))


def _session(tmp_path: Path, server: OpenAIServer, trading: Ledger, run_id: str = "session-1") -> None:
    with Ledger(f"sqlite:///{tmp_path / f'{run_id}.sqlite'}") as own:
        run_simulated_session(
            bars=_bars(), ledger=own, strategy=load_strategy("tests.trading.always_long:ALWAYS_LONG"), params=None, pipeline=_pipeline(tmp_path, server),
            trade_from=datetime(2023, 12, 1, tzinfo=UTC), run_id=run_id, spend_ledger=trading, now=NOW,
        )  # fmt: skip


def _asked_on(server: OpenAIServer) -> list[str]:
    users = [next(m["content"] for m in body["messages"] if m["role"] == "user") for body in server.requests]
    return [json.loads(content)["as_of"][:10] for content in users]


def test_the_sessions_own_spend_today_stops_its_later_bars_and_reaches_the_trading_ledger(tmp_path: Path) -> None:
    """Each December bar is a fresh day of the simulated budget, so only the real money stops the
    second bar: $20.20 spent today on the first bar leaves nothing of the $15 a day."""
    with OpenAIServer(responder=_holds) as server, Ledger(f"sqlite:///{tmp_path / 'trading.sqlite'}") as trading:
        _session(tmp_path, server, trading)
        asked = _asked_on(server)
        assert asked == [asked[0]] * len(SYMBOLS) and asked[0].startswith("2023-12"), asked
        assert project(trading).spent_on(NOW.date())[0] == pytest.approx(len(SYMBOLS) * CALL_USD)
        [cost] = [e for e in trading.events(types=[EventType.COST.value]) if e.payload.get("stage") == "paper_session"]
        assert cost.as_of == NOW and cost.payload["model_calls"] == len(SYMBOLS) and cost.payload["session_run_id"] == "session-1"
        with Ledger(f"sqlite:///{tmp_path / 'session-1.sqlite'}") as own:
            SpendAtNow(trading, NOW).record(own, "session-1")  # a retried run records nothing twice
        assert project(trading).spent_on(NOW.date())[0] == pytest.approx(len(SYMBOLS) * CALL_USD)


def test_a_decide_runs_spend_today_leaves_the_session_no_model_request(tmp_path: Path) -> None:
    with OpenAIServer(responder=_holds) as server, Ledger(f"sqlite:///{tmp_path / 'trading.sqlite'}") as trading:
        spent = {"scope": "run", "run_cost_usd": 14.0, "model_calls": 1, "prompt_tokens": 9_000, "completion_tokens": 100}
        trading.append_many([Event(type=EventType.COST, run_id="decide", mode=Mode.VALIDATION, as_of=NOW, payload=spent)])
        _session(tmp_path, server, trading)
        assert server.requests == [], "$1 left today is short of a bar's worst case (two calls at the prompt size and the output cap)"
        with Ledger(f"sqlite:///{tmp_path / 'session-1.sqlite'}") as own:
            budget = [e for e in own.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "budget"]
        assert budget and all("daily budget $15.0000" in e.payload["reason"] for e in budget)
