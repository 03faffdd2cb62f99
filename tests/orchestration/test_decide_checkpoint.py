"""decide_job checkpoints the graph by default (a SQLite file beside the ledger): a cycle killed mid-graph
and run again resumes, and the model is not asked again for a node it already answered."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.fakes.openai_server import OpenAIServer
from tests.trading.conftest import good_answers, schema_name
from trading.agents import registry
from trading.agents.base import AgentRun, CostClass, Role
from trading.agents.registry import AgentType
from trading.context import SymbolContext

ARMED = {"on": True}
SYMBOLS = ["AAPL", "MSFT"]
NOW = datetime.fromisoformat("2023-12-30T12:00:00+00:00")


class _DieAfterAnalyst:
    """Stands for the process dying after the analyst node: the run fails there, with no retry."""

    name = "die"

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        if ARMED["on"]:
            raise dg.Failure(f"killed after the analyst on {ctx.symbol}", allow_retries=False)
        return {"die": "survived"}


def _setup(tmp_path: Path, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, checkpoint: str | None) -> tuple[LakeResource, TradingResource]:
    monkeypatch.setitem(registry.BUILTIN_AGENTS, "die_after", AgentType("die_after", Role.RESEARCH, CostClass.FREE, registry._NoConfig, lambda n, c, e: _DieAfterAnalyst(), "test node"))
    lake = tmp_path / "lake"
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime.fromisoformat("2023-06-01T00:00:00+00:00"), datetime.fromisoformat("2024-01-01T00:00:00+00:00"))
    replace_partitions(lake, "bars", "1d", daily, period="year")
    llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
    nodes = [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "die", "type": "die_after"}, {"id": "limits", "type": "hard_limits", "when": "trade"}]
    pipeline: dict[str, Any] = {"graph": {"nodes": nodes}, "limits": {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.05}}
    if checkpoint is not None:
        pipeline["checkpoint"] = checkpoint
    (tmp_path / "pipeline.yaml").write_text(json.dumps(pipeline))  # JSON is YAML
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", pipeline_file=str(tmp_path / "pipeline.yaml"))
    return LakeResource(root=str(lake)), resource


def _decide(lake: LakeResource, resource: TradingResource) -> dg.ExecuteInProcessResult:
    """One decide_job run at the run clock NOW (a relaunch of the same cycle has the same clock)."""
    from orchestration.definitions import defs

    config = {"ops": {"decision_cycle": {"config": {"strategy": "tests.trading.always_long:ALWAYS_LONG", "symbols": SYMBOLS}}}}
    job = defs.resolve_job_def("decide_job")
    return job.execute_in_process(run_config=config, resources={"lake": lake, "trading": resource}, tags={NOW_TAG: NOW.isoformat()}, raise_on_error=False)


def _proposals(server: OpenAIServer) -> int:
    return sum(1 for body in server.requests if schema_name(body) == "ProposalOut")


def test_a_decide_run_killed_after_the_analyst_resumes_without_asking_it_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, monkeypatch, checkpoint=None)
        ARMED["on"] = True
        assert not _decide(lake, resource).success
        assert _proposals(server) == len(SYMBOLS), "the analyst answered for each symbol before the kill"
        assert (tmp_path / "ledger.graph.sqlite").is_file(), "the default checkpoint file is beside the ledger"
        ARMED["on"] = False
        rerun = _decide(lake, resource)
        assert rerun.success
        assert _proposals(server) == len(SYMBOLS), "the rerun resumed from the checkpoints: the analyst was not asked again"
        [mat] = rerun.asset_materializations_for_node("decision_cycle")
        assert mat.metadata["execute"].value == len(SYMBOLS)


def test_checkpoint_memory_in_the_pipeline_file_turns_the_default_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, monkeypatch, checkpoint="memory")
        ARMED["on"] = True
        assert not _decide(lake, resource).success
        ARMED["on"] = False
        assert _decide(lake, resource).success
        assert _proposals(server) == 2 * len(SYMBOLS), "nothing kept: the rerun asked the analyst again"
        assert not (tmp_path / "ledger.graph.sqlite").exists()
