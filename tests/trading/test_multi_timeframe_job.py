"""Through Dagster: the decision_cycle asset (decide_job's) with a pipeline file whose trend filter reads the daily frame."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets import trading
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from strategies.builtin import SMA_CROSS
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT", "NVDA", "TSLA"]
PARAMS = {"fast": 5, "slow": 20}
WINDOW = 20
LIMITS = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.2}
FILTERED = {
    "limits": LIMITS,
    "graph": {
        "nodes": [
            {"id": "analyst", "type": "rules_analyst"},
            {"id": "hard_limits", "type": "hard_limits", "when": "trade"},
            {"id": "trend", "type": "trend_filter", "when": "approved", "config": {"timeframe": "1d", "window": WINDOW}},
        ]
    },
}


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    return SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, daily: pl.DataFrame) -> LakeResource:
    root: Path = tmp_path_factory.mktemp("lake")
    replace_partitions(root, "bars", "1d", daily, period="year")
    return LakeResource(root=str(root))


def split_entry_bar(daily: pl.DataFrame) -> tuple[datetime, set[str], set[str]]:
    """The first bar where some entries close below their daily mean and some do not (found in the data)."""
    signals = SMA_CROSS.signals(daily, SMA_CROSS.params(**PARAMS)).sort("symbol", "ts")
    entries = signals.with_columns(pl.col("close").rolling_mean(WINDOW).over("symbol").alias("mean")).filter(pl.col("entry_long"))
    for (ts,), rows in entries.sort("ts").partition_by("ts", as_dict=True, maintain_order=True).items():
        below = set(rows.filter(pl.col("close") < pl.col("mean"))["symbol"].to_list())
        if below and len(below) < rows.height:
            return ts, below, set(rows["symbol"].to_list()) - below  # type: ignore[return-value]
    raise AssertionError("no bar with entries on both sides of the mean in the fixture")


def executed(lake: LakeResource, tmp_path: Path, pipeline: dict[str, Any], as_of: datetime) -> set[str]:
    tmp_path.mkdir()
    (tmp_path / "pipeline.json").write_text(json.dumps(pipeline))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    resource = TradingResource(ledger_url=url, pipeline_file=str(tmp_path / "pipeline.json"))
    config = {"symbols": SYMBOLS, "params": PARAMS, "as_of": as_of.isoformat()}
    result = dg.materialize([trading.decision_cycle], resources={"lake": lake, "trading": resource}, run_config={"ops": {"decision_cycle": {"config": config}}})
    assert result.success
    with Ledger(url) as ledger:
        return {e.payload["symbol"] for e in ledger.events(types=[EventType.DECISION.value]) if e.payload["verdict"] == "EXECUTE"}


def test_a_pipeline_files_trend_filter_holds_the_entries_below_the_daily_mean(lake: LakeResource, daily: pl.DataFrame, tmp_path: Path) -> None:
    as_of, below, above = split_entry_bar(daily)
    assert executed(lake, tmp_path / "plain", {"limits": LIMITS}, as_of) == below | above
    assert executed(lake, tmp_path / "filtered", FILTERED, as_of) == above
