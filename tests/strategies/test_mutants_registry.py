"""Finding strategies at the edges (strategies/registry.py): entry points, a module that does not
import (issue 18: surviving mutants)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from strategies import registry
from strategies.base import StrategyError
from strategies.builtin import BUILTINS, SMA_CROSS


@dataclass
class _EntryPoint:
    name: str
    value: str
    obj: object

    def load(self) -> object:
        return self.obj


def test_entry_points_add_strategies_but_never_replace_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = replace(SMA_CROSS, name="mine")
    impostor = replace(SMA_CROSS, name="impostor")
    points = [_EntryPoint("mine", "pkg.mod:MINE", mine), _EntryPoint("sma_cross", "pkg.mod:IMPOSTOR", impostor)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == registry.ENTRY_POINT_GROUP else [])
    found = registry.available()
    assert found["mine"] is mine and found["sma_cross"] is BUILTINS["sma_cross"]
    assert set(found) == {*BUILTINS, "mine"}
    assert registry.load_strategy("mine") is mine


def test_an_entry_point_that_is_not_a_strategy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "entry_points", lambda group: [_EntryPoint("bad", "pkg.mod:BAD", 3)])
    with pytest.raises(StrategyError, match=r"strategy 'pkg.mod:BAD' is a int, not a strategies.base.Strategy"):
        registry.available()


def test_a_module_that_does_not_import_is_named() -> None:
    with pytest.raises(StrategyError, match=r"strategy 'no_such_module_q1:X': cannot import 'no_such_module_q1'"):
        registry.load_strategy("no_such_module_q1:X")


def test_an_unknown_name_lists_what_there_is() -> None:
    with pytest.raises(StrategyError, match=r"unknown strategy 'nope'; available: \[.*'sma_cross'.*\] \(or 'module:attribute'\)"):
        registry.load_strategy("nope")
    assert registry.load_strategy("sma_cross") is SMA_CROSS
