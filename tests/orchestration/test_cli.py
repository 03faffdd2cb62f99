"""The command line runs a research asset with a run config and records it on the instance."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
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
    capsys.readouterr()
    assert main(["research", "backtest", "--symbols", "NOPE", "--start", "2024-01-01"]) == 2  # bad input: exit 2, no trace
    err = capsys.readouterr().err
    assert err.startswith("error: backtest: no 1d bars for 'NOPE' in the lake") and "make demo" in err and "Traceback" not in err
    assert len(err.splitlines()) == 2
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
    assert main(["decide", "--symbols", "NOPE"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: decision_cycle: no 1d bars for") and "NOPE" in err and "Traceback" not in err


def test_bulk_ingest_writes_partitions_the_ui_shows_as_materialized(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lake.store import read_bars

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    args = ["ingest", "--start", "2024-11-26", "--end", "2024-11-29", "--symbols", "AAPL,MSFT", "--bulk", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1m: 1,980 rows, 1,980 written to 6 partitions, 0 quarantined" in out  # 2 x (390 + 390 + 210)
    assert "1d: 504 rows" in out and str(lake_root) in out  # all of 2024, whole year partitions
    minutes = read_bars(lake_root, ["AAPL", "MSFT"], "1m")
    assert minutes.height == 1980
    assert read_bars(lake_root, ["AAPL"], "1d")["ts"].dt.year().unique().to_list() == [2024]
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(dg.AssetKey("bars_1m"), limit=20).records
        keys = {str(r.partition_key) for r in records}
        assert keys == {f"{d}|{s}" for d in ("2024-11-26", "2024-11-27", "2024-11-29") for s in ("AAPL", "MSFT")}
        assert len(instance.fetch_materializations(dg.AssetKey("bars_1d"), limit=20).records) == 2
        # Tagged with their dimensions as a run's materializations are: the UI filters a symbol by them.
        msft = instance.get_event_tags_for_asset(dg.AssetKey("bars_1m"), filter_tags={"dagster/partition/symbol": "MSFT"})
        assert sorted(t["dagster/partition/date"] for t in msft) == ["2024-11-26", "2024-11-27", "2024-11-29"]
    assert main(args) == 0  # a re-run replaces the same partitions
    assert read_bars(lake_root, ["AAPL", "MSFT"], "1m").equals(minutes)


def test_bulk_ingest_of_sessions_yet_to_come_is_refused(lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date, timedelta

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    soon = date.today() + timedelta(days=40)
    later = soon + timedelta(days=7)
    args = ["ingest", "--start", soon.isoformat(), "--end", later.isoformat(), "--timeframes", "1m", "--symbols", "AAPL", "--bulk", "--no-progress"]
    assert main(args) == 2
    assert not lake_root.exists()


def test_bulk_backfill_with_quarantined_rows_exits_1(lake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README: exit code 1 when rows were quarantined; the clean rows are written all the same.
    (`quantlake ingest --bulk` returns what bulk_backfill returns; its source is the files source.)"""
    import polars as pl

    from assets.resources import LakeResource, MarketDataResource
    from lake.calendar import session_bounds
    from lake.store import read_bars
    from orchestration.bulk import bulk_backfill

    day = SyntheticSource().fetch(["AAPL"], "1m", *session_bounds("2024-11-27"))
    broken = day.with_columns(pl.when(pl.int_range(pl.len()) == 100).then(pl.col("low") - 1.0).otherwise(pl.col("high")).alias("high"))
    files = tmp_path / "files"
    files.mkdir()
    broken.drop("symbol").write_parquet(files / "aapl.parquet")
    defs = dg.Definitions(
        resources={"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource(source="files", files_glob=str(files / "*.parquet"))}
    )
    now = datetime(2024, 12, 2, tzinfo=UTC)
    with dg.DagsterInstance.ephemeral() as instance:
        assert bulk_backfill(defs, instance, [date(2024, 11, 27)], [], ["AAPL"], progress=False, now=now) == 1
        out = capsys.readouterr().out
        assert "1m: 390 rows, 389 written to 1 partitions, 1 quarantined; failing rows by check: {'ohlc_consistent': 1}" in out
        assert read_bars(lake_root, ["AAPL"], "1m").height == 389
        day.drop("symbol").write_parquet(files / "aapl.parquet")
        assert bulk_backfill(defs, instance, [date(2024, 11, 27)], [], ["AAPL"], progress=False, now=now) == 0  # clean


BAD_INPUT = [
    (["backtest", "--params", "{fast: 10}"], "error: --params is not valid JSON"),
    (["backtest", "--params", '{"fastt": 10}'], "error: sma_cross: unknown parameter fastt"),
    (["backtest", "--params", '{"fast": 50, "slow": 10}'], "error: sma_cross: bad parameters: fast (50) must be below slow (10)"),
    (["backtest", "--strategy", "nope"], "error: unknown strategy 'nope'"),
    (["backtest", "--start", "2024-13-01"], "error: --start '2024-13-01' is not a date"),
    (["backtest", "--start", "2024-06-01", "--end", "2024-01-01"], "error: empty range: --start 2024-06-01 is not before --end 2024-01-01"),
    (["sweep", "--grid", '{"fast": []}'], "error: sma_cross: no values to sweep for ['fast']"),
    (["backtest", "--config", '{"bogus": 1}'], 'error: bad run config: Received unexpected config entry "bogus"'),
    (["ingest", "--start", "2024-11-30", "--end", "2024-12-01", "--timeframes", "1m"], "error: no trading session from 2024-11-30 to 2024-12-01"),
    (["ingest", "--start", "2024-12-02", "--end", "2024-11-01"], "error: empty range: --start 2024-12-02 is after --end 2024-11-01"),
]


@pytest.mark.parametrize(("argv", "first_line"), BAD_INPUT, ids=[" ".join(a[:3]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_or_two_lines_and_exit_code_2(
    argv: list[str], first_line: str, lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith(first_line), err
    assert len(err.splitlines()) <= 2 and "Traceback" not in err + out


def test_a_malformed_config_file_and_missing_keys_are_told_plainly(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    config = tmp_path / "run.json"
    config.write_text('{"strategy": "sma_cross",')
    assert main(["backtest", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --config {config} is not valid JSON")
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUANTLAKE_MODE", "paper")
    assert main(["decide", "--symbols", "AAPL"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: trading: mode 'paper' needs ALPACA_API_KEY and ALPACA_SECRET_KEY"]


def test_debug_shows_the_stack_trace(lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.cli import UsageError

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with pytest.raises(UsageError, match="not valid JSON"):
        main(["backtest", "--params", "{", "--debug"])
    assert main(["--debug", "backtest", "--symbols", "NOPE", "--start", "2024-01-01"]) == 2  # a failed run: its error in full, then the line
    err = capsys.readouterr().err
    assert "Stack Trace" in err and err.splitlines()[-2].startswith("error: backtest: no 1d bars for 'NOPE'")


def test_sweep_prints_the_winning_parameters(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    bars = SyntheticSource().fetch(["AAPL"], "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(lake_root, "bars", "1d", bars, period="year")
    grid = '{"fast": [5, 10], "slow": [20, 40]}'
    assert main(["sweep", "--grid", grid, "--symbols", "AAPL", "--start", "2023-01-01", "--end", "2025-01-01", "--no-progress"]) == 0
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if ln.startswith("best parameters:")]
    assert re.fullmatch(r"best parameters: fast=(5|10), slow=(20|40) \(total return -?[\d.]+%; every combination in results.parquet\)", line), line


def test_progress_follows_the_counts_a_step_logs() -> None:
    from orchestration.runs import RunProgress

    with RunProgress("sweep", enabled=False) as progress:
        progress.seen("sweep 3/9")
        assert (progress.bar.n, progress.bar.total) == (3, 9)
        progress.seen("wrote /lake/research/2024/12 files")  # a path is not a count
        progress.seen("paper session: bar 25/100")
        assert (progress.bar.n, progress.bar.total) == (25, 100)


def test_ingest_files_with_a_column_map(lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`quantlake ingest --files ... --column-map ts=Date,...` imports a vendor's header; a weekend
    row in the file is quarantined with its reason (read: written or quarantined, never dropped)."""
    import polars as pl

    from lake.store import read_bars

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    csv = tmp_path / "aapl.csv"
    csv.write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2024-03-01,100,101,99,100.5,1000\n"  # Friday
        "2024-03-02,100.5,102,100,101,900\n"  # Saturday: no session
    )
    cmap = "ts=Date,open=Open,high=High,low=Low,close=Close,volume=Volume"
    args = ["ingest", "--start", "2024-03-01", "--end", "2024-03-01", "--timeframes", "1d", "--symbols", "AAPL", "--no-progress"]
    assert main([*args, "--files", str(csv), "--column-map", cmap]) == 1  # the blocking in_session check failed
    captured = capsys.readouterr()
    out = captured.out
    assert "rows {'bars_1d': 1}" in out and "'in_session': 1" in out
    # Said in words, not Dagster's "1 blocking asset check failed with ERROR severity:; bars_1d: in_session".
    assert "validation failed: in_session (1 row)" in captured.out + captured.err and "ERROR severity" not in captured.out + captured.err
    bars = read_bars(lake_root, ["AAPL"], "1d")
    assert bars["close"].to_list() == [100.5] and bars["ts"].to_list() == [session_bounds_open("2024-03-01")]
    quarantine = pl.read_parquet(next((lake_root / "quarantine").rglob("*.parquet")))
    assert quarantine["close"].to_list() == [101.0] and quarantine["reason"][0] == "2024-03-02 falls on no AAPL session (a weekend or holiday)"

    assert main([*args, "--files", str(csv), "--column-map", "ts=Date,price=Close"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --column-map: column map: 'price' is not a bar column") and "e.g. --column-map ts=Date" in err
    assert main([*args, "--files", str(csv)]) == 2  # the header needs mapping: told which columns lack
    assert "lacks column(s) ['ts', 'open', 'high', 'low', 'close', 'volume']" in capsys.readouterr().err
    assert main([*args, "--column-map", cmap]) == 2
    assert "error: --column-map and --files-tz are for a file import" in capsys.readouterr().err


def session_bounds_open(day: str) -> datetime:
    from lake.calendar import session_bounds

    return session_bounds(day)[0]


def test_bulk_backfill_quarantines_a_files_weekend_row(lake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ingest --bulk` reads the partitions' own windows (nights and weekends included): a Saturday
    row in a file is quarantined with its reason, not skipped; 391 rows in, 390 + 1 out."""
    import polars as pl

    from assets.resources import LakeResource, MarketDataResource
    from lake.calendar import session_bounds
    from orchestration.bulk import bulk_backfill

    day = SyntheticSource().fetch(["AAPL"], "1m", *session_bounds("2024-11-22"))
    saturday = day.tail(1).with_columns(pl.lit(datetime(2024, 11, 23, 15, 0, tzinfo=UTC)).alias("ts"))
    files = tmp_path / "files"
    files.mkdir()
    pl.concat([day, saturday]).drop("symbol").write_parquet(files / "aapl.parquet")
    defs = dg.Definitions(
        resources={"lake": LakeResource(root=str(lake_root)), "market_data": MarketDataResource(source="files", files_glob=str(files / "*.parquet"))}
    )
    with dg.DagsterInstance.ephemeral() as instance:
        assert bulk_backfill(defs, instance, [date(2024, 11, 22)], [], ["AAPL"], progress=False, now=datetime(2024, 12, 2, tzinfo=UTC)) == 1
    out = capsys.readouterr().out
    assert "1m: 391 rows, 390 written to 2 partitions, 1 quarantined; failing rows by check: {'in_session': 1}" in out
    quarantine = pl.read_parquet(next((lake_root / "quarantine").rglob("*.parquet")))
    assert "outside the AAPL session hours" in quarantine["reason"][0]


def test_the_demo_refuses_an_object_store_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's seeded synthetic bars must not land in a deployment's bucket: it stops before any run."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUANTLAKE_LAKE_URL", "s3://trading-lake/prod")
    assert main(["demo"]) == 2
    out, err = capsys.readouterr()
    assert "quantlake demo builds a local lake" in err and "s3://trading-lake/prod" in err and "unset QUANTLAKE_LAKE_URL" in err
    assert not (tmp_path / "home").exists(), "the demo started before refusing"
