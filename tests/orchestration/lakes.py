"""Lakes the orchestration tests read: the offline generator's daily bars, written as ingest writes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from assets.resources import LakeResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions


def synthetic_daily_lake(
    root: Path, symbols: Sequence[str], start: datetime = datetime(2023, 1, 1, tzinfo=UTC), end: datetime = datetime(2024, 7, 1, tzinfo=UTC)
) -> LakeResource:
    """Seed 7's daily bars of `symbols` over [start, end) in year partitions under `root`."""
    bars = SyntheticSource(seed=7).fetch(list(symbols), "1d", start, end)
    replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root))
