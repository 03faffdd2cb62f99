"""Dependencies flow one way: orchestration -> assets -> (trading, backtests) -> strategies / lake."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN: dict[str, set[str]] = {
    "strategies": {"dagster", "orchestration", "assets", "backtests", "trading", "lake", "vectorbt", "alpaca", "langchain", "openai"},
    # lake may use strategies.indicators (pure polars expressions) for its features.
    "lake": {"dagster", "orchestration", "assets", "backtests", "trading"},
    "backtests": {"dagster", "orchestration", "assets", "trading"},
    "trading": {"dagster", "orchestration", "assets"},
    "assets": {"orchestration"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ reaches up or out: {offenders}"
