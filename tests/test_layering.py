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


# Settings are read in orchestration/ only (orchestration/settings.py); the layers below receive values.
NO_ENVIRONMENT = ("lake", "trading", "strategies", "backtests")
PENDING_ENV_READS: set[str] = set()  # none left (QUANTLAKE_LEDGER_PATH is read by orchestration/settings.py)


def _environment_reads(path: Path) -> list[str]:
    """Lines that read or change the process environment: os.environ, os.getenv/putenv, `from os import environ`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{node.lineno}: from os import {a.name}" for a in node.names if a.name in {"environ", "getenv", "putenv", "environb", "getenvb"}]
        elif isinstance(node, ast.Name) and node.id in {"getenv", "environ"}:
            found.append(f"{node.lineno}: {node.id}")
    return found


@pytest.mark.parametrize("package", NO_ENVIRONMENT)
def test_no_environment_reads_below_orchestration(package: str) -> None:
    offenders = {
        where: reads
        for path in sorted((ROOT / package).rglob("*.py"))
        if (where := str(path.relative_to(ROOT))) not in PENDING_ENV_READS and (reads := _environment_reads(path))
    }
    assert not offenders, f"{package}/ reads the environment (take the value from orchestration/settings.py): {offenders}"


def test_the_environment_check_catches_each_way_of_reading(tmp_path: Path) -> None:
    ways = ['import os\nx = os.environ.get("A")', 'import os\nx = os.getenv("A")', "from os import environ\nx = environ['A']", "from os import getenv\nx = getenv('A')"]
    for i, code in enumerate(ways):
        file = tmp_path / f"m{i}.py"
        file.write_text(code)
        assert _environment_reads(file), code
    clean = tmp_path / "clean.py"
    clean.write_text('"""Reads no os.environ."""\nimport os\nx = os.path.join("a", "b")')
    assert not _environment_reads(clean)
