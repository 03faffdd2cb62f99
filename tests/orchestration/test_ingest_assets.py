"""Ingest assets materialized in-process: lake files, checks, quarantine, idempotency."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.partitions import add_symbols, daily_key, intraday_key
from assets.resources import LakeResource, MarketDataResource

DAY, SYMBOL = "2024-11-29", "AAPL"  # a half day: 210 one-minute bars


def _run(job_name: str, key: dg.MultiPartitionKey, resources: Mapping[str, object], tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    job = defs.resolve_job_def(job_name)
    with dg.instance_for_test() as instance:
        add_symbols(instance, [key.keys_by_dimension["symbol"]])
        return job.execute_in_process(partition_key=key, instance=instance, resources=resources, raise_on_error=False, tags=tags)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def test_intraday_partition_writes_bars_derived_and_passes_blocking_checks(lake_root: Path) -> None:
    resources = {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()}
    result = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["ohlc_consistent"].passed and checks["not_null"].passed
    from lake.store import read_bars

    bars = read_bars(lake_root, [SYMBOL], "1m", None, None)
    assert bars.height == 210  # half day: 09:30-13:00 ET
    hourly = read_bars(lake_root, [SYMBOL], "1h", None, None, dataset="resampled")
    assert hourly["volume"].sum() == pytest.approx(bars["volume"].sum())

    first = _digest(lake_root)
    again = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources)
    assert again.success
    assert _digest(lake_root) == first, "re-materializing a partition must replace it exactly"


def test_daily_partition_covers_the_years_sessions(lake_root: Path) -> None:
    resources = {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()}
    result = _run("ingest_daily_job", daily_key("2024", SYMBOL), resources)
    assert result.success
    from lake.store import read_bars

    bars = read_bars(lake_root, [SYMBOL], "1d", None, None)
    assert bars.height == 252
    features = pl.read_parquet(next((lake_root / "features").rglob("*.parquet")))
    assert features.height == 252 and features["rsi_14"].null_count() < 20


def test_bad_rows_fail_the_blocking_check_go_to_quarantine_and_stop_downstream(lake_root: Path, tmp_path: Path) -> None:
    from lake.calendar import session_bounds
    from lake.sources import SyntheticSource

    start, end = session_bounds(DAY)
    bars = SyntheticSource().fetch([SYMBOL], "1m", start, end)
    bad = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 17).then(pl.col("low") - 5.0).otherwise(pl.col("high")).alias("high")
    )
    csv = tmp_path / "aapl.csv"
    bad.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)).write_csv(csv)
    resources = {
        "lake": LakeResource(root=str(lake_root)),
        "market_data": MarketDataResource(source="files", files_glob=str(csv)),
    }
    result = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["ohlc_consistent"].passed
    assert checks["ohlc_consistent"].metadata["failed_rows"].value == 1
    quarantine = pl.read_parquet(next((lake_root / "quarantine").rglob("*.parquet")))
    assert quarantine.height == 1 and "high" in quarantine["reason"][0]
    assert not (lake_root / "resampled").exists(), "a failed blocking check must stop the derived assets"
    from lake.store import read_bars

    assert read_bars(lake_root, [SYMBOL], "1m", None, None).height == 209


def test_a_run_as_of_a_moment_ingests_only_what_had_happened_by_then(lake_root: Path) -> None:
    """The `quantlake/now` tag (or a schedule's firing time) is the run's clock, not the machine's."""
    from lake.calendar import session_bounds, trading_days
    from lake.store import read_bars

    resources = {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()}
    opened = session_bounds(DAY)[0]  # 14:30 UTC
    mid = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), resources, tags={"quantlake/now": f"{DAY}T15:00:30+00:00"})
    assert mid.success
    bars = read_bars(lake_root, [SYMBOL], "1m", None, None)
    assert bars.height == 30 and bars["ts"].min() == opened  # 14:30 to 14:59: the minutes that had closed

    early = _run("ingest_daily_job", daily_key("2024", "MSFT"), resources, tags={"dagster/scheduled_execution_time": "2024-06-03T12:00:00+00:00"})
    assert early.success
    daily = read_bars(lake_root, ["MSFT"], "1d", None, None)
    assert daily.height == len(trading_days("2024-01-01", "2024-05-31"))  # sessions closed before that morning

    bad = _run("ingest_daily_job", daily_key("2024", "MSFT"), resources, tags={"quantlake/now": "2024-06-03 noon"})
    assert not bad.success
    [failure] = bad.get_step_failure_events()
    assert "is not an ISO time" in failure.step_failure_data.error.message  # type: ignore[union-attr]


# --- bad input: a clear error, nothing lost ------------------------------------------------------


def _files(lake_root: Path, csv: Path) -> dict[str, object]:
    return {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource(source="files", files_glob=str(csv))}


def _quarantine(lake_root: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted((lake_root / "quarantine").rglob("*.parquet"))])


def test_daily_bars_from_alpaca_keep_the_first_session_and_missing_ones_are_named(lake_root: Path) -> None:
    """Alpaca stamps a daily bar at midnight New York and filters by bar time: the year's first
    session is asked for in that convention, and a session the server lacks is a missing bar even
    when it is the first of the range (the check spans the range requested, not the dates present)."""
    from lake.calendar import trading_days
    from lake.sources import SyntheticSource
    from lake.store import read_bars
    from tests.fakes.alpaca_data_server import AlpacaDataState, alpaca_bars_from_frame, alpaca_data_server

    days = trading_days("2024-01-01", "2024-12-31")
    daily = SyntheticSource().fetch([SYMBOL], "1d", *year_bounds(2024))
    alpaca = daily.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.truncate("1d").dt.convert_time_zone("UTC"))
    state = AlpacaDataState(bars=alpaca_bars_from_frame(alpaca))
    with alpaca_data_server(state) as url:
        source = MarketDataResource(source="alpaca", alpaca_api_key="PKTEST", alpaca_secret_key="s3cr3t", alpaca_url_override=url)
        resources = {"lake": LakeResource(root=str(lake_root)), "market_data": source}
        result = _run("ingest_daily_job", daily_key("2024", SYMBOL), resources)
        assert result.success
        bars = read_bars(lake_root, [SYMBOL], "1d", None, None)
        assert bars.height == len(days) == 252 and bars["ts"].min() == session_open(days[0])
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["missing_bars"].passed

        state.bars = alpaca_bars_from_frame(alpaca.slice(1))  # the server lacks 2 January
        again = _run("ingest_daily_job", daily_key("2024", SYMBOL), resources)
    checks = {e.check_name: e for e in again.get_asset_check_evaluations()}
    assert not checks["missing_bars"].passed and checks["missing_bars"].metadata["failed_rows"].value == 1
    assert "2024-01-02 14:30" in checks["missing_bars"].metadata["examples"].value  # type: ignore[operator]


def test_every_row_read_is_written_or_quarantined(lake_root: Path, tmp_path: Path) -> None:
    """2 rows in (a Friday bar and a Saturday bar), 1 written and 1 quarantined with its reason; a
    bar after the close is quarantined by the same rule, not dropped outside the asked window."""
    csv = tmp_path / "aapl.csv"
    csv.write_text(
        "ts,open,high,low,close,volume\n"
        "2024-11-22 10:00,100,101,99,100.5,1000\n"  # Friday, in the session
        "2024-11-22 17:30,100.5,101,100,100.7,300\n"  # Friday, after the close
        "2024-11-23 10:00,100.5,102,100,101,900\n"  # Saturday: no session
    )
    result = _run("ingest_intraday_job", intraday_key("2024-11-22", SYMBOL), _files(lake_root, csv))
    from lake.store import read_bars

    assert read_bars(lake_root, [SYMBOL], "1m", None, None)["close"].to_list() == [100.5]
    quarantine = _quarantine(lake_root)
    assert sorted(quarantine["close"].to_list()) == [100.7, 101.0]
    assert all("outside the AAPL session hours" in r for r in quarantine["reason"])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["in_session"].passed and checks["in_session"].metadata["failed_rows"].value == 2


def test_a_malformed_file_fails_once_with_its_line_and_is_not_retried(lake_root: Path, tmp_path: Path) -> None:
    csv = tmp_path / "aapl.csv"
    csv.write_text(
        "ts,open,high,low,close,volume\n"
        "2024-11-22 10:00,100,101,99,100.5,1000\n"
        "2024-11-22 10:01,100.5,101,100,100.7,300,17\n"  # one field too many: which one is extra?
    )
    result = _run("ingest_intraday_job", intraday_key("2024-11-22", SYMBOL), _files(lake_root, csv))
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == [], "bad input must not be retried"
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "aapl.csv line 3: 7 fields where the header" in message and "Exceeded max_retries" not in message
    assert not (lake_root / "bars").exists()


def test_a_transient_source_failure_is_still_retried(lake_root: Path) -> None:
    """A 503 (alpaca-py itself retries only 429/504) is worth asking again: the step's retry policy
    applies, and the second attempt ingests the day."""
    from lake.calendar import session_bounds
    from lake.sources import SyntheticSource
    from tests.fakes.alpaca_data_server import AlpacaDataState, alpaca_bars_from_frame, alpaca_data_server

    bars = SyntheticSource().fetch([SYMBOL], "1m", *session_bounds(DAY))
    state = AlpacaDataState(bars=alpaca_bars_from_frame(bars), failures={1: (503, '{"message": "try later"}')})
    with alpaca_data_server(state) as url:
        source = MarketDataResource(source="alpaca", alpaca_api_key="PKTEST", alpaca_secret_key="s3cr3t", alpaca_url_override=url)
        result = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), {"lake": LakeResource(root=str(lake_root)), "market_data": source})
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert result.success and len(retries) == 1 and len(state.requests) == 2


def test_a_100x_bad_tick_blocks_the_partition(lake_root: Path, tmp_path: Path) -> None:
    from lake.calendar import session_bounds
    from lake.sources import SyntheticSource

    bars = SyntheticSource().fetch([SYMBOL], "1m", *session_bounds(DAY))
    tick = pl.int_range(pl.len()) == 60
    bad = bars.with_columns(pl.when(tick).then(pl.col(c) * 100).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close"))
    csv = tmp_path / "aapl.csv"
    bad.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)).write_csv(csv)
    result = _run("ingest_intraday_job", intraday_key(DAY, SYMBOL), _files(lake_root, csv))
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["price_jump"].passed and checks["price_jump"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["price_jump"].metadata["failed_rows"].value == 2  # up 100x, and back down
    assert "is 100.0x the previous close" in _quarantine(lake_root).sort("ts")["reason"][0]
    assert not (lake_root / "resampled").exists(), "a blocking check stops the derived assets"


def test_a_split_blocks_daily_bars_until_it_is_declared(lake_root: Path, tmp_path: Path) -> None:
    """A 1-for-100 reverse split in a user's daily file: the jump blocks the year; declared in
    <lake>/reference/corporate_actions.csv it is explained and every bar is written."""
    from lake.corporate_actions import corporate_actions_path
    from lake.sources import SyntheticSource
    from lake.store import read_bars

    daily = SyntheticSource().fetch([SYMBOL], "1d", *year_bounds(2024))
    split = pl.col("ts") >= session_open(date(2024, 6, 3))
    after = daily.with_columns(pl.when(split).then(pl.col(c) * 100).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close"))
    csv = tmp_path / "aapl.csv"  # bare dates, as vendors ship daily bars
    after.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()).drop("symbol").write_csv(csv)
    blocked = _run("ingest_daily_job", daily_key("2024", SYMBOL), _files(lake_root, csv))
    checks = {e.check_name: e for e in blocked.get_asset_check_evaluations()}
    assert not checks["price_jump"].passed and checks["price_jump"].metadata["failed_rows"].value == 1
    assert read_bars(lake_root, [SYMBOL], "1d", None, None).height == 251

    path = corporate_actions_path(lake_root)
    path.parent.mkdir(parents=True)
    path.write_text(f"symbol,ex_date,ratio\n{SYMBOL},2024-06-03,0.01\n")
    explained = _run("ingest_daily_job", daily_key("2024", SYMBOL), _files(lake_root, csv))
    assert explained.success
    checks = {e.check_name: e for e in explained.get_asset_check_evaluations()}
    assert checks["price_jump"].passed and checks["outlier_jumps"].passed
    assert read_bars(lake_root, [SYMBOL], "1d", None, None).height == 252


def year_bounds(year: int) -> tuple[datetime, datetime]:
    from lake.calendar import year_window

    return year_window(year)


def session_open(day: date) -> datetime:
    from lake.calendar import session_bounds

    return session_bounds(day)[0]


def test_the_files_column_map_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lake.errors import SourceError
    from orchestration.resources import market_data_resource

    monkeypatch.setenv("QUANTLAKE_DATA_SOURCE", "files")
    monkeypatch.setenv("QUANTLAKE_FILES_GLOB", "bars/*.csv")
    monkeypatch.setenv("QUANTLAKE_FILES_COLUMN_MAP", "ts=Date, close=Adj Close")
    assert market_data_resource().files_column_map == {"Date": "ts", "Adj Close": "close"}
    monkeypatch.setenv("QUANTLAKE_FILES_COLUMN_MAP", "ts=Date,px=Close")
    with pytest.raises(SourceError, match="'px' is not a bar column"):
        market_data_resource()


def test_a_partition_100x_off_the_day_before_is_caught(lake_root: Path, tmp_path: Path) -> None:
    """A file in cents instead of dollars: every bar of the day is 100x the stored day before, so no
    jump lies inside the partition; measured from the last stored bar, its first bar blocks. Declared
    as a split on that day (ratio 0.01), the same file is explained and written."""
    from lake.corporate_actions import corporate_actions_path
    from lake.sources import SyntheticSource
    from lake.store import read_bars

    before, day = "2024-11-26", "2024-11-27"
    ok = _run("ingest_intraday_job", intraday_key(before, SYMBOL), {"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource()})
    assert ok.success
    from lake.calendar import session_bounds

    cents = SyntheticSource().fetch([SYMBOL], "1m", *session_bounds(day)).with_columns(pl.col(c) * 100 for c in ("open", "high", "low", "close"))
    csv = tmp_path / "aapl.csv"
    cents.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)).write_csv(csv)
    blocked = _run("ingest_intraday_job", intraday_key(day, SYMBOL), _files(lake_root, csv))
    checks = {e.check_name: e for e in blocked.get_asset_check_evaluations()}
    assert not checks["price_jump"].passed and checks["price_jump"].metadata["failed_rows"].value == 1
    assert _quarantine(lake_root)["ts"].to_list() == [session_bounds(day)[0]]

    path = corporate_actions_path(lake_root)
    path.parent.mkdir(parents=True)
    path.write_text(f"symbol,ex_date,ratio\n{SYMBOL},{day},0.01\n")
    explained = _run("ingest_intraday_job", intraday_key(day, SYMBOL), _files(lake_root, csv))
    assert explained.success
    assert read_bars(lake_root, [SYMBOL], "1m", *session_bounds(day)).height == 390


@pytest.mark.slow  # the outage waits out three step retries (2, 4, 8 s)
def test_the_run_retries_daemon_reruns_a_source_outage_but_not_a_malformed_file(lake_root: Path, tmp_path: Path) -> None:
    """With run retries on (the default instance config), a run whose source stayed down through its
    step retries is marked to run again; a run failed by a malformed file is marked not to."""
    from orchestration.definitions import defs
    from tests.fakes.alpaca_data_server import AlpacaDataState, alpaca_data_server

    csv = tmp_path / "aapl.csv"
    csv.write_text("ts,open,high,low,close,volume\n2024-11-22 10:00,100,101,99,100.5,1000,1\n")
    job = defs.resolve_job_def("ingest_intraday_job")
    key = intraday_key("2024-11-22", SYMBOL)
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        add_symbols(instance, [SYMBOL])
        bad = job.execute_in_process(partition_key=key, instance=instance, resources=_files(lake_root, csv), raise_on_error=False)
        tags = instance.get_run_by_id(bad.run_id).tags  # type: ignore[union-attr]
        assert not bad.success and tags["dagster/will_retry"] == "false"

        state = AlpacaDataState(failures={n: (503, '{"message": "down"}') for n in range(1, 100)})
        with alpaca_data_server(state) as url:
            source = MarketDataResource(source="alpaca", alpaca_api_key="PKTEST", alpaca_secret_key="s3cr3t", alpaca_url_override=url)
            down = job.execute_in_process(
                partition_key=key, instance=instance, resources={"lake": LakeResource(root=str(lake_root)), "market_data": source}, raise_on_error=False
            )
        assert not down.success and len(state.requests) == 4  # the first try and 3 step retries
        assert instance.get_run_by_id(down.run_id).tags["dagster/will_retry"] == "true"  # type: ignore[union-attr]


# --- a backfill range in one run (BackfillPolicy.single_run) ---------------------------------------

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _asset(name: str) -> dg.AssetsDefinition:
    from assets import bars

    return getattr(bars, name)  # type: ignore[no-any-return]


def _run_range(asset: str, first: dg.MultiPartitionKey, last: dg.MultiPartitionKey, resources: Mapping[str, object], symbols: list[str]) -> dg.ExecuteInProcessResult:
    """One run of `asset` over the rectangle first..last, as a single-run backfill launches it."""
    with dg.instance_for_test() as instance:
        add_symbols(instance, symbols)
        return dg.materialize(
            [_asset(asset)], instance=instance, resources=resources, raise_on_error=False,
            tags=dict(zip(RANGE_TAGS, (str(first), str(last)), strict=True)),
        )


def _run_each(asset: str, keys: list[dg.MultiPartitionKey], resources: Mapping[str, object]) -> list[dg.ExecuteInProcessResult]:
    with dg.instance_for_test() as instance:
        add_symbols(instance, sorted({k.keys_by_dimension["symbol"] for k in keys}))
        return [dg.materialize([_asset(asset)], partition_key=k, instance=instance, resources=resources, raise_on_error=False) for k in keys]


def test_the_bar_assets_backfill_a_range_in_one_run() -> None:
    from assets.bars import bars_1d, bars_1m

    assert bars_1m.backfill_policy == dg.BackfillPolicy.single_run() == bars_1d.backfill_policy


def test_a_range_run_writes_the_files_a_run_per_partition_writes(tmp_path: Path) -> None:
    """Five sessions x two symbols from user files with bad rows (high < low, an after-hours bar, a
    Saturday bar that belongs to Friday's partition): one run over the range writes byte for byte
    the bars and quarantine files of ten runs, one per partition; the checks count every bad row;
    each partition's materialization carries its own rows; a rerun changes nothing."""
    from lake.calendar import session_bounds
    from lake.sources import SyntheticSource
    from lake.store import read_bars

    days = ["2024-11-22", "2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29"]
    symbols = ["AAPL", "MSFT"]
    folder = tmp_path / "files"
    folder.mkdir()
    for symbol in symbols:
        bars = pl.concat([SyntheticSource().fetch([symbol], "1m", *session_bounds(d)) for d in days])
        bad = bars.with_columns(
            pl.when(pl.int_range(pl.len()) == 500).then(pl.col("low") - 5.0).otherwise(pl.col("high")).alias("high")
        ).drop("symbol")
        local = bad.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None))
        extra = pl.DataFrame({"ts": ["2024-11-26 17:30", "2024-11-30 10:00"]}).with_columns(pl.col("ts").str.to_datetime())
        extra = extra.join(local.head(1).drop("ts"), how="cross").select(local.columns)
        pl.concat([local, extra]).sort("ts").write_csv(folder / f"{symbol.lower()}.csv")

    lake_range, lake_each = tmp_path / "range", tmp_path / "each"
    files = MarketDataResource(source="files", files_glob=str(folder / "*.csv"))
    one = _run_range("bars_1m", intraday_key(days[0], "AAPL"), intraday_key(days[-1], "MSFT"),
                     {"lake": LakeResource(root=str(lake_range)), "market_data": files}, symbols)
    keys = [intraday_key(d, s) for d in days for s in symbols]
    each = _run_each("bars_1m", keys, {"lake": LakeResource(root=str(lake_each)), "market_data": files})

    assert _digest(lake_range) == _digest(lake_each) and len(_digest(lake_range)) == 10 + 6  # 10 bar files; 6 quarantine files (3 days x 2 symbols)
    checks = {e.check_name: e for e in one.get_asset_check_evaluations()}
    assert not checks["ohlc_consistent"].passed and checks["ohlc_consistent"].metadata["failed_rows"].value == 2
    assert checks["in_session"].metadata["failed_rows"].value == 4
    per_run = sum(e.metadata["failed_rows"].value for r in each for e in r.get_asset_check_evaluations() if e.check_name == "in_session")
    assert per_run == 4
    mats = {m.partition: m.metadata for m in one.asset_materializations_for_node("bars_1m")}
    assert set(mats) == {str(k) for k in keys}
    friday = mats[str(intraday_key("2024-11-22", "MSFT"))]
    assert friday["quarantined_rows"].value == 0 and friday["dagster/row_count"].value == 390
    assert mats[str(intraday_key("2024-11-29", "MSFT"))]["quarantined_rows"].value == 1  # Saturday's bar
    assert read_bars(lake_range, symbols, "1m").height == 2 * (4 * 390 + 210) - 2

    first = _digest(lake_range)
    again = _run_range("bars_1m", intraday_key(days[0], "AAPL"), intraday_key(days[-1], "MSFT"),
                       {"lake": LakeResource(root=str(lake_range)), "market_data": files}, symbols)
    assert again.success is one.success and _digest(lake_range) == first


def test_a_range_run_of_daily_bars_equals_a_run_per_year(tmp_path: Path) -> None:
    resources = lambda root: {"lake": LakeResource(root=str(root)), "market_data": MarketDataResource()}  # noqa: E731
    one = _run_range("bars_1d", daily_key("2023", "AAPL"), daily_key("2024", "MSFT"), resources(tmp_path / "range"), ["AAPL", "MSFT"])
    assert one.success
    keys = [daily_key(y, s) for y in ("2023", "2024") for s in ("AAPL", "MSFT")]
    each = _run_each("bars_1d", keys, resources(tmp_path / "each"))
    assert all(r.success for r in each)
    assert _digest(tmp_path / "range") == _digest(tmp_path / "each") and len(_digest(tmp_path / "range")) == 4


def test_a_range_run_with_an_empty_partition_fails_before_writing(tmp_path: Path) -> None:
    """A source with nothing for one partition of the range fails the run, naming it, and writes no file."""
    from lake.calendar import session_bounds
    from lake.sources import SyntheticSource

    csv = tmp_path / "aapl.csv"
    bars = SyntheticSource().fetch(["AAPL"], "1m", *session_bounds("2024-11-25"))
    bars.drop("symbol").with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)).write_csv(csv)
    lake = tmp_path / "lake"
    result = _run_range("bars_1m", intraday_key("2024-11-25", "AAPL"), intraday_key("2024-11-26", "AAPL"), _files(lake, csv), ["AAPL"])
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "AAPL 2024-11-26" in failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert not lake.exists() or not list(lake.rglob("*.parquet"))
