"""The command line runs a research asset with a run config and records it on the instance."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from orchestration.cli import main


def test_research_backtest_from_the_command_line(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    bars = SyntheticSource().fetch(["AAPL", "MSFT"], "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(lake_root, "bars", "1d", bars, period="year")
    code = main(["research", "backtest", "--params", '{"fast": 5, "slow": 20}', "--symbols", "AAPL,MSFT", "--start", "2024-01-01", "--end", "2025-01-01"])
    assert code == 0
    out = capsys.readouterr().out
    assert "total_return" in out and "sharpe" in out
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(dg.AssetKey("backtest"), limit=5).records
    assert len(records) == 1
    assert main(["research", "backtest", "--symbols", "NOPE", "--start", "2024-01-01"]) == 1
    # `quantlake backtest` is the same as `quantlake research backtest`.
    assert main(["backtest", "--symbols", "MSFT", "--start", "2024-01-01", "--end", "2025-01-01"]) == 0
    with dg.DagsterInstance.get() as instance:
        assert len(instance.fetch_materializations(dg.AssetKey("backtest"), limit=5).records) == 2


def test_decide_kill_switch_and_resume_from_the_command_line(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", ledger_url)
    bars = SyntheticSource().fetch(["AAPL", "MSFT"], "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(lake_root, "bars", "1d", bars, period="year")
    assert main(["decide", "--symbols", "AAPL,MSFT", "--params", '{"fast": 5, "slow": 20}']) == 0
    out = capsys.readouterr().out
    assert "| symbol | verdict |" in out and "validation" in out
    assert main(["kill-switch", "--reason", "fat finger"]) == 0
    assert main(["resume", "--by", "alice"]) == 0
    assert main(["resume", "--by", "alice"]) == 2  # nothing to resume
    assert "not halted" in capsys.readouterr().err
    from trading.ledger import Ledger

    with Ledger(ledger_url) as ledger:
        kinds = [e.payload["kind"] for e in ledger.events(types=["intervention"])]
    assert kinds == ["kill_switch", "resume"]
    assert main(["decide", "--symbols", "NOPE"]) == 1
    assert "NOPE" in capsys.readouterr().err
