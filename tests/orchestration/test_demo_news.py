"""The demo fills the news dataset (offline headlines) and counts it in its summary."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl

from orchestration.demo import DemoReport, IngestSummary, format_summary, run_news

DAYS = [date(2024, 11, 26), date(2024, 11, 27)]


def test_the_demo_materializes_news_and_prints_its_count(lake_root: Path, tmp_path: Path) -> None:
    from orchestration.definitions import defs

    with dg.instance_for_test() as instance:
        summary = run_news(defs, instance, DAYS, IngestSummary(), progress=False)
    assert (summary.runs, summary.failed_runs, dict(summary.checks_failed)) == (2, [], {})
    files = sorted((lake_root / "news").glob("date=*/part.parquet"))
    assert [f.parent.name for f in files] == [f"date={d}" for d in DAYS]
    stored = pl.read_parquet(files).height
    assert summary.rows["news"] == stored > 0
    text = format_summary(DemoReport(["AAPL"], DAYS, [], ingest=summary), lake=lake_root, home=tmp_path, ledger="sqlite://")
    assert f"  {'news':<16}{stored:>10,} rows" in text.splitlines()
    assert "headlines (news) for the last 2 sessions through the ingest jobs: 2 runs (0 failed)" in text
