"""The paper_session asset as the demo runs it (default config, default limits, default universe):
the session makes the orders, fills and equity of the backtest with the same costs and limits, and
its drift report says 0, though the default limits bind (20 % a position)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from assets import trading
from assets.clock import NOW_TAG
from assets.partitions import DEFAULT_UNIVERSE, universe
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from trading.analytics import CAUSES


def test_the_default_paper_session_is_its_backtest_with_drift_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTLAKE_UNIVERSE", raising=False)
    monkeypatch.delenv("QUANTLAKE_PIPELINE", raising=False)
    symbols = universe()[:3]  # what the asset trades with no symbols configured
    assert set(symbols) <= set(DEFAULT_UNIVERSE)
    bars = SyntheticSource(seed=7).fetch(symbols, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(tmp_path / "lake", "bars", "1d", bars, period="year")
    result = dg.materialize(
        [trading.paper_session],
        resources={"lake": LakeResource(root=str(tmp_path / "lake")), "trading": TradingResource(ledger_url=f"sqlite:///{tmp_path / 'trading.sqlite'}")},
        run_config={"ops": {"paper_session": {"config": {}}}},  # the defaults: donchian_breakout from 2024-01-01, 2 bps, half a cent a share
        tags={NOW_TAG: "2025-01-01T00:00:00+00:00"},
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    # Every backtest order (the brackets' exits included) is matched by its own paper fill, quantity for
    # quantity; the equity is the same.
    assert meta["drift_matched_orders"] == meta["fills"] > 10  # type: ignore[operator]
    assert meta["drift_missing_orders"] == meta["drift_extra_orders"] == 0
    assert abs(meta["drift_shortfall"]) < 1e-6  # type: ignore[arg-type]
    assert meta["max_equity_difference"] < 1e-9 * 100_000  # type: ignore[operator]
    drift = str(meta["drift"])
    for label in (c.replace("_", " ") for c in CAUSES):
        assert f"| {label} | 0.00 |" in drift or f"| {label} | -0.00 |" in drift, label
    # The default limits did bind: without them the backtest trades otherwise.
    assert meta["backtest_without_limits_total_return"] != pytest.approx(meta["backtest_total_return"], abs=1e-6)
