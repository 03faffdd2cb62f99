"""The screener as part of the pipeline: its schedule fires before the day's first decision on the
exchange calendar, the run it requests writes that day's screen, the decide run reads it; the asset
declares its `bars_1d` input (lineage) and names the partitions it lacks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import trading
from assets.clock import NOW_TAG, SCHEDULED_TAG
from assets.resources import LakeResource, TradingResource
from assets.screener import screener
from lake.calendar import get_calendar, session_bounds
from lake.screener import screener_path
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from orchestration.jobs import screener_job
from orchestration.schedules import build_schedules
from tests.orchestration.lakes import synthetic_daily_lake
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT", "NVDA", "TSLA"]
NY = get_calendar().tz
DAY = date(2024, 6, 4)  # a Tuesday: screened from the sessions up to Monday 2024-06-03
PRIOR = date(2024, 6, 3)


def _at(day: date, hour: int, minute: int) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=NY)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return synthetic_daily_lake(tmp_path_factory.mktemp("lake"), SYMBOLS)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", ",".join(SYMBOLS))
    monkeypatch.setenv("QUANTLAKE_SCREENER_LOOKBACK", "10")
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_SYMBOLS", "3")
    monkeypatch.setenv("QUANTLAKE_LEDGER_PATH", str(tmp_path / "tick.sqlite"))  # what the tick's resource opens
    monkeypatch.delenv("QUANTLAKE_DECISION_TIMES", raising=False)
    monkeypatch.delenv("QUANTLAKE_PIPELINE", raising=False)


def _evaluate(tick: datetime) -> object:
    """The schedule as built now (the settings of the test), evaluated at `tick`."""
    from orchestration.definitions import defs

    [schedule] = [s for s in build_schedules() if s.name == "screener_schedule"]
    repo = defs.get_repository_def()
    with dg.instance_for_test() as instance, dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=repo) as ctx:
        return schedule.evaluate_tick(ctx)


def test_the_schedule_fires_before_the_first_decision_each_session_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    [request] = _evaluate(_at(DAY, 10, 30)).run_requests  # type: ignore[attr-defined]
    assert request.partition_key == DAY.isoformat() and request.run_key == f"screener|{DAY}"
    assert _evaluate(_at(DAY, 11, 0)).skip_message  # type: ignore[attr-defined]  # not its time: the decision's
    holiday = _evaluate(_at(date(2024, 11, 28), 10, 30))  # Thanksgiving
    assert not holiday.run_requests and "not a trading day" in holiday.skip_message  # type: ignore[attr-defined]
    monkeypatch.setenv("QUANTLAKE_DECISION_TIMES", "09:40,14:30")  # 30 min before would be before the open's ingest
    [early] = _evaluate(_at(DAY, 9, 40)).run_requests  # type: ignore[attr-defined]  # open + 5 + 5 min
    assert early.partition_key == DAY.isoformat()
    assert _evaluate(_at(DAY, 9, 10)).skip_message  # type: ignore[attr-defined]


def test_the_schedule_skips_while_the_screener_is_off_and_the_pipeline_file_turns_it_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    off = _evaluate(_at(DAY, 10, 30))
    assert not off.run_requests and "the screener is off" in off.skip_message  # type: ignore[attr-defined]
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("screener:\n  enabled: true\n")
    monkeypatch.setenv("QUANTLAKE_PIPELINE", str(pipeline))
    [request] = _evaluate(_at(DAY, 10, 30)).run_requests  # type: ignore[attr-defined]
    assert request.partition_key == DAY.isoformat()


def _decided(url: str) -> set[str]:
    with Ledger(url) as ledger:
        return {e.payload["symbol"] for e in ledger.events(types=[EventType.DECISION.value])}


@pytest.mark.parametrize("switch", ["settings", "pipeline_file"])
def test_the_scheduled_run_writes_the_days_screen_and_the_decision_run_reads_it(
    lake: LakeResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    pipeline_file = ""
    if switch == "settings":
        monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    else:  # only the pipeline file turns it on: the schedule, the asset and the decide run all read it
        pipeline_file = str(tmp_path / "pipeline.yaml")
        Path(pipeline_file).write_text("screener:\n  enabled: true\n")
        monkeypatch.setenv("QUANTLAKE_PIPELINE", pipeline_file)
    tick = _at(DAY, 10, 30)
    [request] = _evaluate(tick).run_requests  # type: ignore[attr-defined]
    defs = dg.Definitions(assets=[screener], jobs=[screener_job], resources={"lake": lake, "trading": TradingResource(pipeline_file=pipeline_file)})
    run = defs.get_job_def("screener_job").execute_in_process(
        partition_key=request.partition_key, tags={**request.tags, SCHEDULED_TAG: tick.isoformat()}, raise_on_error=False
    )
    assert run.success
    chosen = set(pl.read_parquet(screener_path(lake.path, DAY)).filter("chosen")["symbol"])
    assert len(chosen) == 3
    url = f"sqlite:///{tmp_path / 'decide.sqlite'}"
    decide = dg.materialize(
        [trading.decision_cycle],
        resources={"lake": lake, "trading": TradingResource(ledger_url=url, pipeline_file=pipeline_file)},
        run_config={"ops": {"decision_cycle": {"config": {"params": {"fast": 5, "slow": 20}}}}},
        tags={NOW_TAG: _at(DAY, 11, 0).isoformat()},  # the 11:00 decision: no as_of, the day of its now
        raise_on_error=False,
    )
    assert decide.success and _decided(url) == chosen


def test_the_asset_declares_every_bars_1d_partition_as_its_input() -> None:
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    key = dg.AssetKey("screener")
    assert dg.AssetKey("bars_1d") in graph.get(key).parent_keys
    [dep] = [d for d in screener.specs_by_key[key].deps if d.asset_key == dg.AssetKey("bars_1d")]
    assert isinstance(dep.partition_mapping, dg.AllPartitionMapping)


def _lake_until(tmp_path: Path, end: datetime, late: dict[str, datetime] | None = None) -> LakeResource:
    root = tmp_path / "lake"
    for symbol in SYMBOLS:
        until = (late or {}).get(symbol, end)
        bars = SyntheticSource(seed=7).fetch([symbol], "1d", datetime(2024, 1, 1, tzinfo=UTC), until)
        replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root))


def _screen(lake: LakeResource) -> dg.ExecuteInProcessResult:
    now = _at(DAY, 10, 30)
    return dg.materialize([screener], resources={"lake": lake, "trading": TradingResource()}, partition_key=DAY.isoformat(), tags={NOW_TAG: now.isoformat()}, raise_on_error=False)


def test_a_missing_prior_session_is_named_by_its_bars_1d_partition(tmp_path: Path) -> None:
    before_prior = session_bounds(PRIOR)[0]  # every symbol's bars stop before Monday: the open's ingest has not run
    result = _screen(_lake_until(tmp_path, before_prior))
    assert not result.success
    error = str(result.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]
    assert f"no bars_1d of the prior session {PRIOR}" in error and "AAPL|2024" in error and "TSLA|2024" in error


def test_a_symbol_stale_in_bars_1d_is_rejected_naming_its_partition(tmp_path: Path) -> None:
    late = {"NVDA": session_bounds(PRIOR)[0]}  # NVDA's year partition stops at Friday
    result = _screen(_lake_until(tmp_path, datetime(2024, 7, 1, tzinfo=UTC), late))
    assert result.success
    stored = pl.read_parquet(screener_path(Path(tmp_path / "lake"), DAY))
    reasons = dict(zip(stored["symbol"], stored["reason"], strict=True))
    assert reasons["NVDA"] == f"input: bars_1d NVDA|2024 has no bar of the prior session {PRIOR}"
    assert "NVDA" not in stored.filter("chosen")["symbol"].to_list() and stored["chosen"].sum() == 3
    [mat] = result.asset_materializations_for_node("screener")
    assert mat.metadata["missing_bars_1d"].value == ["NVDA|2024"]
