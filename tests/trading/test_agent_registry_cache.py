"""Agent type lookups read the installed packages' entry points once per process; `refresh` reads them again."""

from importlib import metadata

import pytest

from tests.fakes.entry_points import faked_entry_points
from trading.agents import registry
from trading.agents.base import CostClass, Role
from trading.agents.rules import RuleValidator

PROBE = registry.AgentType("probe_validator", Role.VALIDATOR, CostClass.FREE, registry._NoConfig, lambda n, c, e: RuleValidator(), "A plugin.")


def test_lookups_scan_the_metadata_once_and_refresh_sees_a_new_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    with faked_entry_points(monkeypatch, registry.refresh) as fake:
        assert "probe_validator" not in registry.agent_types()
        registry.catalog()
        registry.expect_roles({Role.VALIDATOR: registry.AgentSpec(type="rules_validator")})
        assert fake.scans == [registry.AGENT_ENTRY_POINT_GROUP]  # one scan for three lookups

        fake.installed.append(metadata.EntryPoint("probe", f"{__name__}:PROBE", registry.AGENT_ENTRY_POINT_GROUP))
        assert "probe_validator" not in registry.agent_types()  # installed since: not seen until a refresh
        registry.refresh()
        assert registry.agent_types()["probe_validator"] is PROBE
        assert "probe_validator" in {t["type"] for t in registry.catalog()}  # what `quantlake agents list` prints
        assert len(fake.scans) == 2
