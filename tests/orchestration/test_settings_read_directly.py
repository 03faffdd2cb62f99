"""Orchestration reads its settings values (the universe, the exchange) from `settings()`, not back
through assets.partitions, which only receives them (issue 12: one settings object, read in
orchestration). The partitions definitions and calendar helpers stay in assets.partitions."""

from __future__ import annotations

import ast

import pytest

from orchestration.settings import settings
from tests.orchestration.dagster_server import ROOT

# What assets.partitions hands back of the values orchestration passed down to it.
SETTINGS_READERS = {"universe", "exchange", "current_settings"}
# Not yet moved (another change owns the file): remove from here when it reads settings() too.
def _reads_through_partitions(path: str) -> list[str]:
    tree = ast.parse((ROOT / path).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "assets.partitions":
            found += [f"{path}:{node.lineno} imports {a.name}" for a in node.names if a.name in SETTINGS_READERS]
        if isinstance(node, ast.Attribute) and node.attr in SETTINGS_READERS and isinstance(node.value, ast.Name) and node.value.id == "partitions":
            found.append(f"{path}:{node.lineno} calls partitions.{node.attr}")
    return found


def test_orchestration_reads_the_universe_and_exchange_from_settings() -> None:
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "orchestration").glob("*.py") if p.name != "settings.py")
    assert len(modules) > 10
    assert [hit for m in modules for hit in _reads_through_partitions(m)] == []


def test_the_sorted_universe_is_what_the_partitions_hand_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and the sensors sort `universe_symbols` as assets.partitions.universe() does: same symbols, same order."""
    from assets import partitions

    for raw in ("", "msft, AAPL,msft , xom", "NVDA"):
        monkeypatch.setenv("QUANTLAKE_UNIVERSE", raw)
        assert sorted(settings().universe_symbols) == partitions.universe()
