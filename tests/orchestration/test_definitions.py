"""The one Definitions loads, every job resolves, and resources come from the environment."""

from __future__ import annotations

import dagster as dg
import pytest


def test_definitions_load_and_every_job_resolves() -> None:
    from orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"ingest_intraday_job", "ingest_daily_job"}
    for job in repo.get_all_jobs():
        assert defs.resolve_job_def(job.name).name == job.name


def test_unknown_data_source_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.resources import market_data_resource

    monkeypatch.setenv("QUANTLAKE_DATA_SOURCE", "bloomberg")
    with pytest.raises(ValueError, match="QUANTLAKE_DATA_SOURCE='bloomberg'"):
        market_data_resource()


def test_alpaca_is_chosen_only_with_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.resources import market_data_resource

    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    monkeypatch.delenv("ALPACA_SECRET_KEY", raising=False)
    monkeypatch.setenv("QUANTLAKE_DATA_SOURCE", "auto")
    assert market_data_resource().source == "synthetic"
    monkeypatch.setenv("ALPACA_API_KEY", "canary-key-id")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "canary-secret-0123456789")
    resource = market_data_resource()
    assert resource.source == "alpaca"
    assert "canary-secret" not in repr(resource)


def test_partitions_are_computed_when_asked_not_listed_at_load() -> None:
    """Days and years are time windows (they grow with the clock), symbols are dynamic (the instance's)."""
    from assets.partitions import daily_partitions, intraday_partitions

    for multi in (intraday_partitions, daily_partitions):
        kinds = {type(d.partitions_def) for d in multi.partitions_defs}
        assert kinds == {dg.TimeWindowPartitionsDefinition, dg.DynamicPartitionsDefinition}
