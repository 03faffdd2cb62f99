"""The agent catalog: metadata and config schema per node type, `quantlake agents list|show`, the asset."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from assets import agents
from assets.resources import TradingResource
from orchestration.cli import main
from trading.agents.registry import BUILTIN_AGENTS, catalog, catalog_markdown
from trading.graph import GraphSpec, mermaid


def test_every_type_has_its_metadata_and_config_schema() -> None:
    types = {t["type"]: t for t in catalog()}
    assert set(BUILTIN_AGENTS) <= set(types)
    assert types["llm_analyst"]["role"] == "analyst" and types["llm_analyst"]["cost_class"] == "model"
    assert types["llm_analyst"]["outputs"] == ["proposal"]
    assert "model" in types["llm_analyst"]["config_schema"]["properties"]
    assert types["rules_risk"]["inputs"] == ["context", "proposal", "hard"]
    assert types["rules_risk"]["config_schema"]["properties"]["min_confidence"]["maximum"] == 1
    assert types["hard_limits"]["role"] == "limits" and "portfolio" in types["hard_limits"]["reads"]
    table = catalog_markdown()
    assert all(f"| {name} | {t['role']} | {t['cost_class']} |" in table for name, t in types.items())


def test_agents_list_and_show_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "list"]) == 0
    listed = capsys.readouterr().out
    assert "| rules_validator | validator | free |" in listed and "| hard_limits | limits | free |" in listed
    assert main(["agents", "show", "llm_risk"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["type"] == "llm_risk" and shown["outputs"] == ["soft"] and "base_url" in shown["config_schema"]["properties"]
    assert main(["agents", "show", "oracle"]) == 2
    assert "unknown agent type 'oracle'" in capsys.readouterr().err


def test_the_catalog_asset_prints_the_types_and_the_configured_graph(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("graph:\n  nodes:\n    - {id: a, type: rules_analyst}\n    - {id: check, type: rules_validator, when: approved}\n  edges:\n    - {from: a, to: limits, when: trade}\n    - {from: limits, to: check, when: approved}\n")
    pipeline.write_text(pipeline.read_text().replace("    - {id: check", "    - {id: limits, type: hard_limits}\n    - {id: check"))
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}", pipeline_file=str(pipeline))
    result = dg.materialize([agents.agent_catalog], resources={"trading": resource})
    assert result.success
    meta = result.asset_materializations_for_node("agent_catalog")[0].metadata
    assert meta["types"].value == len(catalog())
    assert "| rules_analyst | analyst | free |" in str(meta["catalog"].value)
    graph = str(meta["pipeline_graph"].value)
    assert "a -->|trade| limits" in graph and "limits -->|approved| check" in graph


def test_mermaid_of_the_default_chain() -> None:
    spec = GraphSpec.model_validate({"nodes": [{"id": "analyst", "type": "rules_analyst"}, {"id": "risk", "type": "rules_risk", "when": "approved"}]})
    text = mermaid(spec)
    # The limits the file left out are appended after its last node.
    assert "begin((start)) --> analyst" in text and "risk -->|trade| hard_limits" in text
