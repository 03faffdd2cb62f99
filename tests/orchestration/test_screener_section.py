"""The pipeline file's `screener:` section over the QUANTLAKE_SCREENER* settings: the fields it gives win,
the others keep the settings; decide runs with no explicit symbols follow its switch."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

import orchestration  # noqa: F401  # passes the settings down to assets.screener
from assets.screener import ScreenerSettings, screened_universe, with_section
from lake.screener import SCREEN_SCHEMA, ScreenerRules, write_screen
from trading.pipeline import ScreenerSection


def test_the_fields_the_file_gives_win_and_the_others_keep_the_settings() -> None:
    base = ScreenerSettings(enabled=False, rules=ScreenerRules(lookback=10, min_price=3.0, max_symbols=3))
    merged = with_section(base, ScreenerSection(enabled=True, max_symbols=2))
    assert merged == ScreenerSettings(enabled=True, rules=ScreenerRules(lookback=10, min_price=3.0, max_symbols=2))
    assert with_section(base, None) is base
    assert with_section(base, ScreenerSection()) == base, "an empty section changes nothing (defaults are not 'given')"
    assert with_section(base, ScreenerSection(max_price=100.0)).rules.max_price == 100.0
    assert base.rules.max_price == math.inf
    with pytest.raises(ValueError, match="min_price 3.0 is above max_price 2.0"):
        with_section(base, ScreenerSection(max_price=2.0))  # the file's max against the setting's min


def test_a_decide_run_with_the_section_on_reads_the_days_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL,MSFT")
    monkeypatch.delenv("QUANTLAKE_SCREENER", raising=False)
    row = {"symbol": "MSFT", "chosen": True, "score": 0.0, "last_close": None, "avg_dollar_volume": None, "momentum": None, "gap": None, "reason": None}
    write_screen(tmp_path, date(2024, 6, 4), pl.DataFrame([row], schema=SCREEN_SCHEMA))
    now = datetime(2024, 6, 4, 15, 0, tzinfo=UTC)
    assert screened_universe(tmp_path, now, None) == ["AAPL", "MSFT"], "settings off, no section: the universe"
    assert screened_universe(tmp_path, now, None, section=ScreenerSection(enabled=True)) == ["MSFT"]
    monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    assert screened_universe(tmp_path, now, None, section=ScreenerSection(enabled=False)) == ["AAPL", "MSFT"], "the file turns it off"


def test_the_asset_screens_with_the_pipeline_files_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from assets.clock import NOW_TAG
    from assets.resources import LakeResource, TradingResource
    from assets.screener import screener
    from lake.screener import screener_path
    from lake.sources.synthetic import SyntheticSource
    from lake.store import replace_partitions

    symbols = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT"]
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", ",".join(symbols))
    monkeypatch.setenv("QUANTLAKE_SCREENER_LOOKBACK", "10")
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_SYMBOLS", "3")
    root = tmp_path / "lake"
    replace_partitions(root, "bars", "1d", SyntheticSource(seed=7).fetch(symbols, "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC)), period="year")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("screener:\n  max_symbols: 2\n")

    def screen(pipeline_file: str) -> dg.ExecuteInProcessResult:
        resources = {"lake": LakeResource(root=str(root)), "trading": TradingResource(pipeline_file=pipeline_file)}
        return dg.materialize([screener], resources=resources, partition_key="2024-06-04", tags={NOW_TAG: "2024-06-04T15:00:00+00:00"}, raise_on_error=False)

    assert screen("").success and pl.read_parquet(screener_path(root, "2024-06-04"))["chosen"].sum() == 3, "the settings alone"
    result = screen(str(pipeline))
    assert result.success and pl.read_parquet(screener_path(root, "2024-06-04"))["chosen"].sum() == 2, "the file's max_symbols wins"
    [mat] = result.asset_materializations_for_node("screener")
    assert mat.metadata["rules"].value["lookback"] == 10, "the setting the file leaves out is kept"  # type: ignore[index,call-overload]
    pipeline.write_text("screener:\n  lookback: 0\n")
    bad = screen(str(pipeline))
    assert not bad.success
    assert "screener.lookback" in str(bad.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]
