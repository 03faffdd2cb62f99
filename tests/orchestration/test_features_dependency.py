"""features_1d of year Y warms up on year Y-1's bars: the asset graph says so (partition mapping),
Dagster's own backfill orders the runs by it, a range of years in one run equals a run per year,
and a year computed without its warm-up year's bars fails its check instead of passing silently."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.execution.api import execute_run
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.hosted_user_process import recon_job_from_origin

from assets.bars import bars_1d
from assets.clock import NOW_TAG
from assets.derived import WARM_UP_CHECK, features_1d
from assets.partitions import add_symbols, daily_key, intraday_key
from assets.resources import LakeResource, MarketDataResource
from orchestration.run_context import ObservedLakeResource
from tests.orchestration.dagster_server import ROOT

NOW = "2025-06-02T00:00:00+00:00"  # runs as of a fixed moment: no wall clock
SYMBOLS = ["AAPL", "MSFT"]
YEARS = ["2022", "2023"]  # 2022 is the first year of the test partitions (tests/conftest.py)
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# What the backfill below loads as its code location: the product's two assets, run in process so
# the test can choose the order in which the runs of one backfill tick finish.
backfill_defs = dg.Definitions(
    assets=[bars_1d, features_1d],
    resources={"lake": ObservedLakeResource(), "market_data": MarketDataResource()},  # lake: QUANTLAKE_LAKE_DIR, read when used
    executor=dg.in_process_executor,
)


def _features(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "features").rglob("*.parquet"))}


def _per_partition(root: Path, keys: list[dg.MultiPartitionKey]) -> None:
    """The single-process reference: one run of bars then features per partition, years in order."""
    resources = {"lake": LakeResource(root=str(root)), "market_data": MarketDataResource()}
    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        for key in keys:
            assert dg.materialize([bars_1d, features_1d], partition_key=key, instance=instance, resources=resources, tags={NOW_TAG: NOW}).success


def _parents(child_keys: list[str], parent: str, child: str) -> list[list[str]]:
    """The parent partitions of each of `child`'s `child_keys` in `parent`, as the asset graph maps them."""
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        with partition_loading_context(dynamic_partitions_store=instance):
            return [
                sorted(graph.get_parent_partition_keys_for_child(key, dg.AssetKey(parent), dg.AssetKey(child)).partitions_subset.get_partition_keys())
                for key in child_keys
            ]


def test_features_of_a_year_depend_on_the_bars_of_that_year_and_the_year_before() -> None:
    later, first = _parents([str(daily_key("2024", "MSFT")), str(daily_key("2022", "MSFT"))], "bars_1d", "features_1d")
    assert later == ["MSFT|2023", "MSFT|2024"]
    assert first == ["MSFT|2022"]  # the first year: no warm-up year to wait for


def test_minute_features_of_a_day_depend_on_the_bars_of_that_day_and_the_session_before() -> None:
    monday, after_thanksgiving = _parents([str(intraday_key("2024-11-25", "AAPL")), str(intraday_key("2024-11-29", "AAPL"))], "bars_1m", "features_1m")
    assert monday == ["2024-11-22|AAPL", "2024-11-25|AAPL"]  # Monday: Friday's session
    assert after_thanksgiving == ["2024-11-27|AAPL", "2024-11-29|AAPL"]  # after Thanksgiving


def test_the_derived_assets_backfill_a_range_in_one_run_as_their_bars_do() -> None:
    from assets.bars import bars_1m
    from assets.derived import bars_resampled, features_1m
    from orchestration.definitions import defs

    single = dg.BackfillPolicy.single_run()
    assert features_1d.backfill_policy == single == bars_1d.backfill_policy
    assert bars_resampled.backfill_policy == features_1m.backfill_policy == single == bars_1m.backfill_policy
    for name in ("ingest_daily_job", "ingest_intraday_job"):  # one policy per job: Dagster no longer falls back to a run per partition
        assert defs.resolve_job_def(name).backfill_policy == single


def test_a_range_run_of_features_equals_a_run_per_year(tmp_path: Path) -> None:
    """Bars of 2022-2024 for two symbols in the lake; features over 2023..2024 of AAPL in one run
    write byte for byte what two runs, one per year, write (EMA and RSI remember their whole input:
    each year still sees only itself and the year before)."""
    each, ranged = tmp_path / "each", tmp_path / "range"
    years = ["2022", "2023", "2024"]
    _per_partition(each, [daily_key(y, s) for y in years for s in SYMBOLS])
    _per_partition(ranged, [daily_key(y, s) for y in years for s in SYMBOLS])  # the same lake, then features redone as a range
    for f in (ranged / "features").rglob("*.parquet"):
        f.unlink()
    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        result = dg.materialize(
            [features_1d], instance=instance, resources={"lake": LakeResource(root=str(ranged))}, selection=[features_1d],
            tags=dict(zip(RANGE_TAGS, ("AAPL|2022", "AAPL|2024"), strict=True)),
        )
    assert result.success
    mats = {m.partition: m.metadata["dagster/row_count"].value for m in result.asset_materializations_for_node("features_1d")}
    assert mats == {"AAPL|2022": 251, "AAPL|2023": 250, "AAPL|2024": 252}
    aapl = {k: v for k, v in _features(each).items() if "symbol=AAPL" in k}
    assert len(aapl) == 3 and _features(ranged) == aapl


def test_a_year_computed_without_its_warm_up_year_fails_its_check(tmp_path: Path) -> None:
    """The race a backfill of runs launched together had: 2023's features before 2022's bars land.
    They are written (a rerun after the bars mends them) but the check names them; the first year
    of the data has no warm-up year and passes."""
    lake = tmp_path / "lake"
    resources = {"lake": LakeResource(root=str(lake)), "market_data": MarketDataResource()}
    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        cold = dg.materialize([bars_1d, features_1d], partition_key=daily_key("2023", "AAPL"), instance=instance, resources=resources, tags={NOW_TAG: NOW})
        first = dg.materialize([bars_1d, features_1d], partition_key=daily_key("2022", "AAPL"), instance=instance, resources=resources, tags={NOW_TAG: NOW})
        warm = dg.materialize([features_1d], partition_key=daily_key("2023", "AAPL"), instance=instance, resources=resources, selection=[features_1d])
    checks = {name: [e for e in r.get_asset_check_evaluations() if e.check_name == WARM_UP_CHECK] for name, r in
              (("cold", cold), ("first", first), ("warm", warm))}
    [c], [f], [w] = checks["cold"], checks["first"], checks["warm"]
    assert not c.passed and c.metadata["cold_partitions"].value == "AAPL 2023"
    assert f.passed and w.passed


# --- Dagster's asset backfill, in process, with the runs of a tick finishing in any order ----------

class DeferredRunLauncher(RunLauncher, ConfigurableClass):
    """Keeps the runs a backfill tick launches: the test runs them afterwards, in the order it picks
    (as workers that finish in any order would)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self.launched: list[DagsterRun] = []
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> DeferredRunLauncher:
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        self.launched.append(context.dagster_run)

    def take(self) -> list[DagsterRun]:
        out, self.launched = self.launched, []
        return out

    def terminate(self, run_id: str) -> bool:
        return False


@pytest.fixture
def backfill_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(tmp_path / "backfill_lake"))
    assert ObservedLakeResource().path == tmp_path / "backfill_lake"  # never the repo's data/lake
    launcher = {"module": __name__, "class": DeferredRunLauncher.__name__}
    with dg.instance_for_test(synchronous_run_coordinator=True, overrides={"run_launcher": launcher}) as instance:
        add_symbols(instance, SYMBOLS)
        yield instance


def _run_backfill(instance: dg.DagsterInstance, keys: list[dg.MultiPartitionKey]) -> list[list[DagsterRun]]:
    """Dagster's asset backfill of bars_1d and features_1d over `keys`, tick by tick as the daemon
    runs it; each tick's runs finish in reverse launch order. Returns the runs of each tick."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name=__name__, attribute="backfill_defs", working_directory=str(ROOT)))
    ticks: list[list[DagsterRun]] = []
    with create_test_daemon_workspace_context(InProcessTestWorkspaceLoadTarget(origin), instance) as workspace:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id="features", asset_graph=workspace.create_request_context().asset_graph, partition_names=[str(k) for k in keys],
            asset_selection=[bars_1d.key, features_1d.key], backfill_timestamp=time.time(), tags={NOW_TAG: NOW},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None,
        )
        instance.add_backfill(backfill)
        launcher = instance.run_launcher
        assert isinstance(launcher, DeferredRunLauncher)
        for _ in range(10):
            list(execute_backfill_iteration(workspace, logging.getLogger("test_backfill")))
            runs = launcher.take()
            for run in reversed(runs):  # the last launched finishes first
                execute_run(recon_job_from_origin(run.job_code_origin), run, instance)  # type: ignore[arg-type]
            if runs:
                ticks.append(runs)
            backfill_now = instance.get_backfill("features")
            if backfill_now is not None and backfill_now.status != BulkActionStatus.REQUESTED:
                break
    assert backfill_now is not None and backfill_now.status == BulkActionStatus.COMPLETED_SUCCESS, backfill_now
    return ticks


def test_a_backfill_of_two_years_launched_together_gives_the_features_of_runs_in_order(
    backfill_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    keys = [daily_key(y, s) for y in YEARS for s in SYMBOLS]
    ticks = _run_backfill(backfill_instance, keys)
    # features_1d runs in the tick after every run of bars_1d (their runs finished in reverse order),
    # or in the very run that writes the bars it needs.
    assets = [[{k.to_user_string() for k in run.asset_selection or []} for run in runs] for runs in ticks]
    last_bars_tick = max(i for i, tick in enumerate(assets) for run in tick if "bars_1d" in run)
    assert all(i > last_bars_tick or "bars_1d" in run for i, tick in enumerate(assets) for run in tick if "features_1d" in run), assets
    reference = tmp_path / "reference"
    _per_partition(reference, keys)
    backfilled = _features(tmp_path / "backfill_lake")
    expected = _features(reference)
    assert len(expected) == len(keys)
    assert {k: v for k, v in backfilled.items() if k in expected} == expected, "the backfill's features differ from runs in year order"


def test_a_range_run_of_the_intraday_derived_assets_equals_a_run_per_day(tmp_path: Path) -> None:
    """1-minute bars of three sessions (Friday, Monday, Tuesday) for two symbols; bars_resampled and
    features_1m over the range in one run write byte for byte what a run per partition writes
    (Monday's features warmed up on Friday's bars in both), and each partition gets its row count."""
    from assets.bars import bars_1m
    from assets.derived import bars_resampled, features_1m

    days = ["2024-11-22", "2024-11-25", "2024-11-26"]
    keys = [intraday_key(d, s) for d in days for s in SYMBOLS]
    each, ranged = tmp_path / "each", tmp_path / "range"
    with dg.instance_for_test() as instance:
        add_symbols(instance, SYMBOLS)
        for root in (each, ranged):
            resources = {"lake": LakeResource(root=str(root)), "market_data": MarketDataResource()}
            assets = [bars_1m, bars_resampled, features_1m] if root == each else [bars_1m]
            for key in keys:
                assert dg.materialize(assets, partition_key=key, instance=instance, resources=resources, tags={NOW_TAG: NOW}).success
        result = dg.materialize(
            [bars_resampled, features_1m], instance=instance, resources={"lake": LakeResource(root=str(ranged))},
            tags=dict(zip(RANGE_TAGS, (str(keys[0]), str(keys[-1])), strict=True)),
        )
    assert result.success
    rows = {m.partition: m.metadata["dagster/row_count"].value for m in result.asset_materializations_for_node("features_1m")}
    assert rows == {str(k): 390 for k in keys}

    def derived(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for ds in ("resampled", "features") for p in sorted((root / ds).rglob("*.parquet"))}

    assert len(derived(each)) == len(keys) * 5 and derived(ranged) == derived(each)  # 4 timeframes + features per partition
