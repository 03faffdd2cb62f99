"""Strategy lookups read the installed packages' entry points once per process; `refresh` reads them again."""

from importlib import metadata

import pytest

from strategies import registry
from strategies.builtin import SMA_CROSS
from tests.fakes.entry_points import faked_entry_points


def test_lookups_scan_the_metadata_once_and_refresh_sees_a_new_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    with faked_entry_points(monkeypatch, registry.refresh) as fake:
        assert "sma_again" not in registry.available()
        registry.load_strategy("sma_cross")
        registry.available()
        assert fake.scans == [registry.ENTRY_POINT_GROUP]  # one scan for three lookups

        fake.installed.append(metadata.EntryPoint("sma_again", "strategies.builtin:SMA_CROSS", registry.ENTRY_POINT_GROUP))
        assert "sma_again" not in registry.available()  # a package installed since: not seen until a refresh
        registry.refresh()
        assert registry.available()["sma_again"] is SMA_CROSS
        assert len(fake.scans) == 2
