"""Finding strategies: built-ins by name, user strategies by dotted path or entry point.

A user ships `my_pkg/strats.py` with `MY = Strategy(...)` and either passes "my_pkg.strats:MY" or
declares it under the entry-point group `quantlake.strategies` in their own package metadata.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module, metadata

from strategies.base import Strategy, StrategyError
from strategies.builtin import BUILTINS

ENTRY_POINT_GROUP = "quantlake.strategies"


@cache
def entry_points(group: str) -> tuple[metadata.EntryPoint, ...]:
    """The group's entry points, read once per process: a scan reads every installed package's
    metadata (the soak looked strategies up thousands of times). `refresh()` reads them again."""
    return tuple(metadata.entry_points(group=group))


def refresh() -> None:
    """Forget the entry points read so far: the next lookup sees packages installed since."""
    entry_points.cache_clear()


def available() -> dict[str, Strategy]:
    """Built-ins plus every strategy registered by an installed package's entry point."""
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, _checked(ep.load(), ep.value))
    return found


def load_strategy(ref: str) -> Strategy:
    """A built-in or entry-point name ("sma_cross") or a dotted path ("my_pkg.strats:MY")."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            module = import_module(module_name)
        except ImportError as exc:
            raise StrategyError(f"strategy {ref!r}: cannot import {module_name!r}: {exc}") from exc
        if not hasattr(module, attr):
            raise StrategyError(f"strategy {ref!r}: module {module_name!r} has no {attr!r}")
        return _checked(getattr(module, attr), ref)
    strategies = available()
    if ref not in strategies:
        raise StrategyError(f"unknown strategy {ref!r}; available: {sorted(strategies)} (or 'module:attribute')")
    return strategies[ref]


def _checked(obj: object, ref: str) -> Strategy:
    if not isinstance(obj, Strategy):
        raise StrategyError(f"strategy {ref!r} is a {type(obj).__name__}, not a strategies.base.Strategy")
    return obj
