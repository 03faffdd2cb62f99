"""The built-in team pipeline: rule nodes offline, and a bull/bear debate of N rounds through the
loopback OpenAI server making exactly 2N calls per judged symbol, in turn order."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets import trading
from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.fakes.openai_server import OpenAIServer, auto_reply
from tests.trading.conftest import Market, busiest_entry_bar, schema_name
from trading.agents.team import TEAM_PIPELINE
from trading.events import EventType, MemorySink
from trading.ledger import Ledger
from trading.models import Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig, load_pipeline_config

ROOMY = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.05}


def _team(**overrides: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(TEAM_PIPELINE))
    for node in raw["graph"]["nodes"]:
        node.setdefault("config", {}).update(overrides.get(node["id"], {}))
    return {**raw, "limits": ROOMY}


def test_the_team_pipeline_decides_offline_with_rules(market: Market) -> None:
    contexts = market.contexts()
    signalled = {c.symbol for c in contexts if c.wants}
    sink = MemorySink()
    result = DecisionPipeline(PipelineConfig.model_validate(_team())).run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
    assert result.model_calls == 0
    judged = [d for d in result.decisions if d.symbol in signalled]
    assert len(judged) == len(signalled)
    for d in judged:  # each one the team's (trader / manager) or the limits' word
        assert re.match(r"(analyst: trader: |trader: |hard limits)", d.rationale), d.rationale
    assert result.executed(), "the fixture's bullish entries pass the debate"
    assert all("manager: risk debate keeps" in d.rationale for d in result.executed())
    # Deterministic: the same cycle again decides the same.
    again = DecisionPipeline(PipelineConfig.model_validate(_team())).run(contexts, market.snapshot, as_of=market.as_of)
    assert again.decisions == [d.model_copy(update={"run_id": again.run_id}) for d in result.decisions]


@pytest.mark.parametrize("rounds", [1, 3])
def test_a_debate_of_n_rounds_makes_exactly_2n_model_calls_per_symbol(rounds: int, market: Market) -> None:
    with OpenAIServer(responder=auto_reply) as server:
        llm = {"llm": {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}}
        cfg = PipelineConfig.model_validate({**_team(bull={**llm, "rounds": rounds}, bear={**llm, "rounds": rounds}), "max_in_flight": 1})
        pipeline = DecisionPipeline(cfg)
        contexts = market.contexts()
        signalled = sorted(c.symbol for c in contexts if c.wants)
        assert pipeline.estimate(contexts)["model_calls_max"] == 2 * rounds * len(signalled)
        sink = MemorySink()
        result = pipeline.run(contexts, market.snapshot, as_of=market.as_of, sink=sink)
        assert not [e for e in sink.events if e.type.value == "fallback"], "the model's arguments were used"
        assert Counter(schema_name(b) for b in server.requests) == Counter({"ArgumentOut": 2 * rounds * len(signalled)})
        assert result.model_calls == 2 * rounds * len(signalled)
        # One symbol at a time: bull and bear alternate, round by round.
        turns = [re.search(r"the (bull|bear) researcher in round (\d+)", b["messages"][0]["content"]).groups() for b in server.requests]  # type: ignore[union-attr]
        per_symbol = [(side, n) for r in range(1, rounds + 1) for side, n in (("bull", str(r)), ("bear", str(r)))]
        assert turns == per_symbol * len(signalled)
        assert {d.symbol for d in result.decisions if d.verdict in (Verdict.EXECUTE, Verdict.HOLD)} >= set(signalled)


TEAM_FILE = Path(__file__).resolve().parents[2] / "trading" / "graph" / "pipelines" / "team.yaml"


def test_the_built_in_team_file_is_the_team_pipeline() -> None:
    assert load_pipeline_config(TEAM_FILE) == PipelineConfig.model_validate(TEAM_PIPELINE)


def test_the_team_pipeline_runs_end_to_end_offline_in_a_dagster_job(tmp_path: Path) -> None:
    """decision_cycle with the team file: rule nodes, no model, decisions in the ledger with the team's rationales."""
    symbols = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT"]
    bars = SyntheticSource(seed=7).fetch(symbols, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    replace_partitions(tmp_path / "lake", "bars", "1d", bars, period="year")
    as_of = busiest_entry_bar(bars)
    now = as_of + timedelta(days=4)  # the daily bar is long complete; no later bar is used (as_of is fixed)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    resource = TradingResource(ledger_url=url, pipeline_file=str(TEAM_FILE))
    result = dg.materialize(
        [trading.decision_cycle],
        resources={"lake": LakeResource(root=str(tmp_path / "lake")), "trading": resource},
        run_config={"ops": {"decision_cycle": {"config": {"symbols": symbols, "as_of": as_of.isoformat(), "params": {"fast": 5, "slow": 20}}}}},
        tags={NOW_TAG: now.isoformat()},
    )
    assert result.success
    with Ledger(url) as ledger:
        decided = [e.payload for e in ledger.events(types=[EventType.DECISION.value])]
    executed = [d for d in decided if d.get("verdict") == "EXECUTE"]
    assert executed, [(d.get("symbol"), d.get("rationale")) for d in decided]
    assert all("trader:" in d["rationale"] and "manager:" in d["rationale"] for d in executed)
