"""Installed packages' entry points, faked: what a registry would find, and how often it looked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata

import pytest


@dataclass
class FakeEntryPoints:
    installed: list[metadata.EntryPoint] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)  # the groups asked for, one entry a scan

    def __call__(self, group: str) -> list[metadata.EntryPoint]:
        self.scans.append(group)
        return [ep for ep in self.installed if ep.group == group]


@contextmanager
def faked_entry_points(monkeypatch: pytest.MonkeyPatch, refresh: Callable[[], None]) -> Iterator[FakeEntryPoints]:
    """`importlib.metadata.entry_points` answered by a fake while inside; the registry's cache is
    refreshed on entry and on exit, so later tests read the real metadata."""
    fake = FakeEntryPoints()
    monkeypatch.setattr(metadata, "entry_points", fake)
    refresh()
    try:
        yield fake
    finally:
        monkeypatch.undo()
        refresh()
