"""The trading path on a lake in an S3-compatible object store (moto's S3 server on a loopback port):
a `decide_job` run on the simulated broker, the end-of-day report and a paper session read their bars
from the bucket (and write their outputs there), each equal to the same run on a local lake; the
price-move sensor reads the newest closes from the bucket."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets import trading
from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.filesystem import ObjectPath, lake_location
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.lake.test_s3_lake import BUCKET, _objects, endpoint  # noqa: F401  # endpoint: moto's server, a fixture
from tests.orchestration.plans import ALWAYS_LONG
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "MSFT", "NVDA"]
AS_OF, NOW, DAY = "2024-03-05T14:30:00+00:00", "2024-03-06T16:00:00+00:00", "2024-03-05"  # the 5th's bar, complete by now (11:00 in New York, the window open)
RUN_SPECIFIC = {"cost_per_agent", "cost_per_provider"}  # nothing of the lake in them


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC))


@pytest.fixture
def lakes(endpoint: str, bars: pl.DataFrame, tmp_path: Path) -> tuple[LakeResource, LakeResource]:  # noqa: F811
    """The same daily bars in a fresh prefix of the bucket and in a local folder, as resources."""
    url = f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}"
    s3, local = LakeResource(root=url, endpoint=endpoint), LakeResource(root=str(tmp_path / "local-lake"))
    assert isinstance(s3.location, ObjectPath) and s3.location == lake_location(url, endpoint=endpoint)
    for lake in (s3, local):
        replace_partitions(lake.location, "bars", "1d", bars, period="year")
    return s3, local


def _trading(tmp_path: Path, name: str) -> TradingResource:
    return TradingResource(mode="simulation", ledger_url=f"sqlite:///{tmp_path / f'{name}.sqlite'}", sim_state_file=str(tmp_path / f"{name}-sim.json"))


def _decide(lake: LakeResource, trading_: TradingResource) -> dict[str, Any]:
    from orchestration.definitions import defs

    config = {"strategy": ALWAYS_LONG, "symbols": SYMBOLS, "as_of": AS_OF}
    run = defs.resolve_job_def("decide_job").execute_in_process(
        run_config={"ops": {"decision_cycle": {"config": config}}}, resources={"lake": lake, "trading": trading_}, tags={NOW_TAG: NOW}
    )
    assert run.success
    [mat] = run.asset_materializations_for_node("decision_cycle")
    return {k: v.value for k, v in mat.metadata.items() if k not in RUN_SPECIFIC}


def _ledger(trading_: TradingResource) -> list[tuple[str, str | None, Any]]:
    """The ledger's events as what they say (ids and record times left out)."""
    with Ledger(trading_.ledger_url) as ledger:
        return [(e.type.value, e.symbol, e.as_of) for e in ledger.events()]


def _broker(trading_: TradingResource) -> dict[str, Any]:
    """The simulated account's state without its order ids (named by the run)."""
    state = json.loads(Path(trading_.sim_state_file).read_text())
    return {k: v for k, v in state.items() if k not in ("orders", "next_id")} | {"orders": len(state.get("orders", []))}


def test_a_decide_run_and_the_end_of_day_report_on_the_bucket_equal_a_local_lakes(
    lakes: tuple[LakeResource, LakeResource], tmp_path: Path
) -> None:
    s3, local = lakes
    runs = []
    for name, lake in (("s3", s3), ("local", local)):
        trading_ = _trading(tmp_path, name)
        decided = _decide(lake, trading_)
        eod = dg.materialize(
            [trading.end_of_day_report], resources={"lake": lake, "trading": trading_}, tags={NOW_TAG: NOW},
            run_config={"ops": {"end_of_day_report": {"config": {"day": DAY, "symbols": SYMBOLS}}}},
        )  # fmt: skip
        assert eod.success
        [mat] = eod.get_asset_materialization_events()
        runs.append((decided, _ledger(trading_), _broker(trading_), {k: v.value for k, v in mat.materialization.metadata.items()}))
    (s3_decided, s3_events, s3_broker, s3_eod), (local_decided, local_events, local_broker, local_eod) = runs
    assert s3_decided["orders_sent"] == 3 and s3_decided["execute"] == 3  # one entry per symbol, sent to the simulated broker
    assert s3_decided == local_decided  # decisions, orders, equity, cash, positions: the bars were the same
    assert s3_events == local_events and s3_broker == local_broker
    assert s3_eod["report_file"] == f"{s3.location}/reports/eod/{DAY}.md"
    assert {k: v for k, v in s3_eod.items() if k != "report_file"} == {k: v for k, v in local_eod.items() if k != "report_file"}
    report = (s3.location / "reports" / "eod" / f"{DAY}.md").read_bytes()  # type: ignore[union-attr]
    assert report == (Path(local.root) / "reports" / "eod" / f"{DAY}.md").read_bytes()
    assert b"3 decisions" in report


def test_a_paper_session_reads_the_bucket_and_stores_its_ledger_there(lakes: tuple[LakeResource, LakeResource], tmp_path: Path) -> None:
    s3, local = lakes
    metas = []
    for name, lake in (("s3", s3), ("local", local)):
        result = dg.materialize(
            [trading.paper_session], resources={"lake": lake, "trading": _trading(tmp_path, name)}, tags={NOW_TAG: "2024-03-08T00:00:00+00:00"},
            run_config={"ops": {"paper_session": {"config": {"symbols": SYMBOLS, "start": "2023-09-01"}}}},
        )  # fmt: skip
        assert result.success
        [event] = result.get_asset_materialization_events()
        metas.append(({k: v.value for k, v in event.materialization.metadata.items()}, result.run_id))
    (s3_meta, s3_run), (local_meta, _) = metas
    assert s3_meta["fills"] > 0  # type: ignore[operator]
    different = {"ledger", "equity_vs_backtest"}  # where the ledger is; the chart's image (its PNG encoder's metadata)
    assert {k: v for k, v in s3_meta.items() if k not in different} == {k: v for k, v in local_meta.items() if k not in different}
    stored = s3.location / "research" / "paper_session" / "ledgers" / f"{s3_run}.sqlite"  # type: ignore[operator]
    assert s3_meta["ledger"] == str(stored)
    assert f"research/paper_session/ledgers/{s3_run}.sqlite" in _objects(s3.location)  # type: ignore[arg-type]
    copy = tmp_path / "downloaded.sqlite"
    copy.write_bytes(stored.read_bytes())
    with Ledger(f"sqlite:///{copy}") as ledger:  # a whole database: the session's fills are in it
        assert sum(e.type.value == "fill" for e in ledger.events()) == s3_meta["fills"]
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("paper_session-*")], "the local staging folder is removed"


def test_the_price_move_sensor_reads_the_newest_closes_from_the_bucket(
    lakes: tuple[LakeResource, LakeResource], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from orchestration.definitions import defs

    s3, _ = lakes
    monkeypatch.setenv("QUANTLAKE_LAKE_URL", s3.root)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(tmp_path / "empty-local-lake"))  # the URL wins: this folder has no bars
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", "AAPL")
    monkeypatch.setenv("QUANTLAKE_MOVE_TIMEFRAME", "1d")
    sensor = defs.resolve_sensor_def("price_move_sensor")
    repo = defs.get_repository_def()
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo))
        assert not first.run_requests and "baseline" in (first.skip_message or "")
        baseline = json.loads(first.cursor or "{}")
        assert baseline["AAPL"][0].startswith("2024-03-07")  # the newest bar in the bucket
        baseline["AAPL"][1] *= 0.9  # as if the last trigger saw a price 10 % lower
        moved = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=json.dumps(baseline), repository_def=repo))
        [request] = moved.run_requests or []
        assert request.run_key is not None and request.run_key.startswith("move|AAPL@2024-03-07") and "+11.11%" in request.tags["quantlake/moved"]
