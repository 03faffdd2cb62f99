"""The maintenance and fan-out jobs on a lake in an S3-compatible object store (moto's S3 server on a
loopback port): `retention_job` deletes on the bucket exactly what the policy names and nothing else
and archives and compacts the ledger into the bucket as into a local lake, `chunked_sweep_job` writes the table a local
lake gets, and `compact_bars_job` folds the bucket's closed months as it does a local lake's."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.filesystem import ObjectPath
from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars, replace_partitions, write_frame_atomic, write_text_atomic
from tests.lake.test_s3_lake import BUCKET, _objects, endpoint  # noqa: F401  # endpoint: moto's server, a fixture
from tests.orchestration.test_retention import _ledger_events
from trading.ledger import Ledger, project, projections
from trading.ledger.archive import restore_events
from trading.ledger.compaction import compacted

NOW = "2026-06-10T07:00:00+00:00"  # quarantine and reports kept 90 days: from 2026-03-12 on


@pytest.fixture
def lakes(endpoint: str, tmp_path: Path) -> tuple[LakeResource, LakeResource]:  # noqa: F811
    """An empty prefix of the bucket and an empty local folder, as lake resources."""
    s3 = LakeResource(root=f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}", endpoint=endpoint)
    assert isinstance(s3.location, ObjectPath)
    return s3, LakeResource(root=str(tmp_path / "local-lake"))


def _files(root: Path | ObjectPath) -> list[str]:
    if isinstance(root, ObjectPath):
        return _objects(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _old_and_recent(root: Path | ObjectPath) -> None:
    """Quarantine partitions and reports on both sides of the cutoff, clean bars and a research output as old as the oldest."""
    frame = pl.DataFrame({"ts": [datetime(2025, 12, 1, 15, tzinfo=UTC)], "symbol": ["AAPL"], "reason": ["high < low"]})
    for dataset in ("quarantine", "bars"):
        for period in ("date=2025-12-01", "date=2026-03-12", "date=2026-06-09", "year=2025", "year=2026"):
            write_frame_atomic(frame, root / dataset / "timeframe=1m" / "symbol=AAPL" / period / "part.parquet")  # type: ignore[arg-type]
    for name in ("2026-01-02.md", "2026-03-11.md", "2026-03-12.md", "2026-06-09.md", "notes.md"):
        write_text_atomic(root / "reports" / "eod" / name, f"# {name}\n")  # type: ignore[arg-type]
    write_text_atomic(root / "research" / "backtest" / "metrics.json", "{}")  # type: ignore[arg-type]


def test_retention_deletes_on_the_bucket_what_the_policy_names_and_nothing_else(
    lakes: tuple[LakeResource, LakeResource], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.definitions import defs

    for kind, days in {"QUARANTINE": "90", "REPORTS": "90", "RUNS": "-1", "CHECKPOINT": "-1", "LLM_CACHE": "-1"}.items():
        monkeypatch.setenv(f"QUANTLAKE_RETENTION_{kind}_DAYS", days)
    monkeypatch.setenv("QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS", "30")
    monkeypatch.setenv("QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS", "30")
    metas: list[dict[str, Any]] = []
    before: list[list[str]] = []
    states: list[dict[str, Any]] = []
    events = _ledger_events()  # the same events (ids too) in both ledgers
    for lake in lakes:
        _old_and_recent(lake.location)
        before.append(_files(lake.location))
        ledger_url = f"sqlite:///{tmp_path / f'ledger-{len(metas)}.sqlite'}"
        with Ledger(ledger_url) as ledger:
            ledger.append_many(events)
            states.append(json.loads(projections.to_json(project(ledger))))
        trading = TradingResource(mode="simulation", ledger_url=ledger_url)
        with dg.instance_for_test() as instance:
            run = defs.resolve_job_def("retention_job").execute_in_process(instance=instance, resources={"lake": lake, "trading": trading}, tags={NOW_TAG: NOW})
        assert run.success
        [output] = [e for e in run.all_node_events if e.is_successful_output]
        metas.append({k: v.value for k, v in output.event_specific_data.metadata.items()})  # type: ignore[union-attr]
        # A new process of new code (no snapshot of its version) folds from the archive: the same account.
        with monkeypatch.context() as patch, Ledger(ledger_url) as ledger:
            patch.setattr(projections, "CODE_VERSION", "another-fold")
            assert compacted(ledger).archive == lake.location / "archive" / "ledger"  # found again, the store's endpoint too
            assert json.loads(projections.to_json(project(ledger))) == states[-1]
    s3, local = lakes
    gone = {
        "quarantine/timeframe=1m/symbol=AAPL/date=2025-12-01/part.parquet",
        "quarantine/timeframe=1m/symbol=AAPL/year=2025/part.parquet",
        "reports/eod/2026-01-02.md",
        "reports/eod/2026-03-11.md",  # the day before the first day kept
    }
    assert before[0] == before[1] and gone <= set(before[0])
    archive = ["archive/ledger/events-000000000001-000000000019.parquet"]  # recorded before 05-11 (30 days): the deposit and 18 fills
    assert _files(s3.location) == _files(local.location) == sorted((set(before[0]) - gone) | set(archive))  # the bars of 2025 stay
    assert list(restore_events(s3.location / "archive" / "ledger")) == list(restore_events(local.location / "archive" / "ledger")) == events[:19]
    s3_meta, local_meta = metas
    assert (s3_meta["quarantine_files"], s3_meta["report_files"]) == (2, 2)
    assert s3_meta["bytes_freed"] == local_meta["bytes_freed"] > 0
    assert s3_meta["quarantine_sample"] == local_meta["quarantine_sample"]  # keys under the lake's prefix, as paths under its folder
    assert s3_meta["ledger_events_archived"] == local_meta["ledger_events_archived"] == 19
    assert s3_meta["ledger_events_compacted"] == local_meta["ledger_events_compacted"] == 19  # the whole file: the 4 newer events stay
    assert s3_meta["ledger_archive_file"] == f"{s3.location}/{archive[0]}"
    assert s3_meta["ledger_archive_bytes"] == local_meta["ledger_archive_bytes"] > 0


def _sweep_config() -> dict[str, Any]:
    return {"strategy": "sma_cross", "params": {}, "grid": {"fast": [5, 10, 20], "slow": [30, 60]}, "symbols": ["AAPL", "MSFT"],
            "start": "2023-01-01", "end": "2025-01-01", "chunks": 3, "fees_bps": 1.0, "slippage_bps": 2.0, "timeframe": "1d"}  # fmt: skip


def test_a_chunked_sweep_reads_and_writes_the_bucket_as_a_local_lake(lakes: tuple[LakeResource, LakeResource]) -> None:
    from orchestration.fanout import chunked_sweep_job

    bars = SyntheticSource().fetch(["AAPL", "MSFT"], "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    tables, metas = [], []
    for lake in lakes:
        replace_partitions(lake.location, "bars", "1d", bars, period="year")
        result = chunked_sweep_job.execute_in_process(run_config={"ops": {"split_sweep": {"config": _sweep_config()}}}, resources={"lake": lake})
        assert result.success and len(result.output_for_node("sweep_chunk")) == 3
        out = lake.location / "research" / "parameter_sweep_chunked"
        tables.append(pl.read_parquet((out / "results.parquet").read_bytes()))
        [mat] = result.asset_materializations_for_node("collect_sweep")
        metas.append(mat.metadata)
        assert (out / "report" / "heatmap.png").read_bytes().startswith(b"\x89PNG")
    assert tables[0].height == 6
    assert_frame_equal(tables[0], tables[1], check_exact=True)
    assert metas[0]["path"].value == f"{lakes[0].location}/research/parameter_sweep_chunked/results.parquet"
    assert metas[0]["best_params"].value == metas[1]["best_params"].value


def test_the_compaction_job_folds_the_buckets_closed_months(lakes: tuple[LakeResource, LakeResource]) -> None:
    from orchestration.definitions import defs

    bars = SyntheticSource(seed=5).fetch(["AAPL"], "1m", datetime(2024, 5, 28, tzinfo=UTC), datetime(2024, 7, 3, tzinfo=UTC))
    metas = []
    for lake in lakes:
        replace_partitions(lake.location, "bars", "1m", bars)
        with dg.instance_for_test() as instance:
            run = defs.resolve_job_def("compact_bars_job").execute_in_process(instance=instance, resources={"lake": lake}, tags={NOW_TAG: "2024-07-15T12:00:00+00:00"})
        assert run.success
        [mat] = run.asset_materializations_for_node("bars_1m_compaction")
        metas.append({k: v.value for k, v in mat.metadata.items()})
        assert_frame_equal(read_bars(lake.location, ["AAPL"], "1m"), bars)
    s3, local = lakes
    assert metas[0] == metas[1] and metas[0]["symbol_months"] == 2 and metas[0]["day_files_folded"] == 4 + 19  # type: ignore[operator]  # 28-31 May; June without Juneteenth
    assert _files(s3.location) == _files(local.location)
    assert [f for f in _files(s3.location) if "date=2024-07" not in f] == [f"bars/timeframe=1m/symbol=AAPL/month={m}/part.parquet" for m in ("2024-05", "2024-06")]
