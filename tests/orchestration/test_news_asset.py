"""The `news` asset materialized in-process, offline: day partitions, checks, quarantine, point-in-time reads."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.news import NewsResource
from assets.resources import LakeResource
from lake.news.store import news_path, read_news, read_news_quarantine
from lake.news.validation import NewsWindow

DAYS = ("2024-11-25", "2024-11-26", "2024-11-27")
UNIVERSE = "AAPL,MSFT,NVDA"


@pytest.fixture(autouse=True)
def _universe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", UNIVERSE)


def _run(day: str, resources: Mapping[str, object], now: str = "2024-12-02T12:00:00+00:00") -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    job = defs.resolve_job_def("ingest_news_job")
    with dg.instance_for_test() as instance:
        return job.execute_in_process(partition_key=day, instance=instance, resources=resources, raise_on_error=False, tags={"quantlake/now": now})


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_a_few_days_offline_then_read_as_of_a_decision(tmp_path: Path) -> None:
    resources = {"lake": LakeResource(root=str(tmp_path)), "news_source": NewsResource(seed=7)}
    for day in DAYS:
        result = _run(day, resources)
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        [mat] = result.asset_materializations_for_node("news")
        assert mat.partition == day and mat.metadata["dagster/row_count"].value == pl.read_parquet(news_path(tmp_path, day)).height  # type: ignore[attr-defined]
    first = _digest(tmp_path)
    assert _run(DAYS[1], resources).success
    assert _digest(tmp_path) == first, "re-materializing a day replaces it exactly"

    decision = datetime.fromisoformat("2024-11-27T15:30:00+00:00")  # 10:30 New York on the third day
    seen = read_news(tmp_path, ["AAPL", "MSFT", "NVDA"], until=decision, lookback=timedelta(days=2))
    assert seen.height > 5 and set(seen["symbol"]) == {"AAPL", "MSFT", "NVDA"}
    assert (seen["created_at"] <= decision).all() and (seen["updated_at"] <= decision).all()
    stored = pl.concat([pl.read_parquet(news_path(tmp_path, d)) for d in DAYS])
    later = stored.filter((pl.col("created_at") > decision) | (pl.col("updated_at") > decision))
    assert later.height > 0 and not set(later["id"]) & set(seen["id"]), "the lake has later headlines; none reached the decision"


def test_todays_partition_holds_only_what_has_happened(tmp_path: Path) -> None:
    resources = {"lake": LakeResource(root=str(tmp_path)), "news_source": NewsResource(seed=7)}
    now = "2024-11-27T16:00:00+00:00"
    assert _run("2024-11-27", resources, now=now).success
    stored = pl.read_parquet(news_path(tmp_path, "2024-11-27"))
    assert stored.height > 0 and (stored["created_at"] < datetime.fromisoformat(now)).all()
    with pytest.raises(dg.DagsterUnknownPartitionError):
        _run("2024-11-28", resources, now=now)  # Thanksgiving: no partition at all
    early = _run("2024-11-29", resources, now=now)
    assert not early.success and "has not begun yet" in str(early.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]


def test_bad_rows_from_a_file_are_quarantined_and_the_check_blocks(tmp_path: Path) -> None:
    files = tmp_path / "news.csv"
    files.write_text(
        "id,symbol,created_at,headline\n"
        "1,AAPL,2024-11-26T15:00:00Z,Fine\n"
        "2,TSLA,2024-11-26T15:00:00Z,Not ours\n"
        "3,MSFT,2024-11-26T16:00:00Z,\n"
    )
    lake = tmp_path / "lake"
    resources = {"lake": LakeResource(root=str(lake)), "news_source": NewsResource(source="files", files_glob=str(files))}
    result = _run("2024-11-26", resources)
    assert not result.success  # a failing blocking check fails the run, as for bars
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"not_null": True, "headline_present": False, "symbol_known": False, "in_window": True, "updated_after_created": True, "id_unique": True}
    assert pl.read_parquet(news_path(lake, "2024-11-26"))["id"].to_list() == ["1"]
    quarantined = read_news_quarantine(lake, "2024-11-26")
    assert dict(zip(quarantined["id"], quarantined["reason"], strict=True)) == {
        "2": "symbol TSLA is not in the universe",
        "3": "news 3 for MSFT has an empty headline",
    }
    window = NewsWindow.of("2024-11-26")
    assert window.start < datetime.fromisoformat("2024-11-26T15:00:00+00:00") < window.end


def test_the_source_is_chosen_from_the_environment_and_keys_stay_hidden() -> None:
    from orchestration.resources import news_resource
    from orchestration.settings import settings

    def news_resource_from_env(env: dict[str, str]) -> NewsResource:
        return news_resource(settings(env))  # the QUANTLAKE_NEWS_* reads live in the one settings object

    assert news_resource_from_env({}).source == "synthetic"
    keys = {"ALPACA_API_KEY": "canary-key-id", "ALPACA_SECRET_KEY": "canary-secret-0123456789"}
    alpaca = news_resource_from_env(keys)
    assert alpaca.source == "alpaca" and "canary" not in repr(alpaca)  # keys reach the resource as dg.EnvVar names
    assert news_resource_from_env({**keys, "QUANTLAKE_NEWS_SOURCE": "synthetic"}).source == "synthetic"
    files = news_resource_from_env({"QUANTLAKE_NEWS_SOURCE": "files", "QUANTLAKE_NEWS_FILES_GLOB": "data/news/*.csv"})
    assert (files.source, files.files_glob) == ("files", "data/news/*.csv")
    with pytest.raises(ValueError, match="QUANTLAKE_NEWS_SOURCE='reuters'"):
        news_resource_from_env({"QUANTLAKE_NEWS_SOURCE": "reuters"})
    with pytest.raises(ValueError, match="needs files_glob"):
        NewsResource(source="files").build()


def test_cli_ingests_news_days_and_says_what_was_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.cli import main

    lake = tmp_path / "lake"
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(lake))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("")
    files = tmp_path / "news.jsonl"
    files.write_text(
        '{"id": 1, "symbols": ["AAPL"], "created_at": "2024-11-26T15:00:00Z", "headline": "AAPL gains"}\n'
        '{"id": 2, "symbols": ["TSLA"], "created_at": "2024-11-27T15:00:00Z", "headline": "not ours"}\n'
    )
    assert main(["ingest", "--dataset", "news", "--start", "2024-11-26", "--end", "2024-11-27", "--files", str(files)]) == 1
    out, err = capsys.readouterr()
    # the blocking check fails that day's run, as it does a partition of bars
    assert "2 runs, 1 failed; rows {'news': 1}" in out and "failed {'symbol_known': 1}" in out
    assert "news 2024-11-27: validation failed: symbol_known (1 row)" in err and "quarantine/news" in err
    assert read_news_quarantine(lake, "2024-11-27")["reason"].to_list() == ["symbol TSLA is not in the universe"]
    assert main(["status"]) == 0
    assert "news        by day              1 partitions  2024-11-26 to 2024-11-26" in capsys.readouterr().out
    assert main(["ingest", "--dataset", "news", "--start", "2024-11-28", "--end", "2024-11-28"]) == 2
    assert "no trading session from 2024-11-28" in capsys.readouterr().err
