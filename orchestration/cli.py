"""`quantlake`: the command line over the same jobs and libraries as the UI."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from lake.paths import REPO_ROOT


def _ensure_dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()  # an empty file keeps the default SQLite storage, without a warning
    return home


def cmd_demo(args: argparse.Namespace) -> int:
    home = _ensure_dagster_home()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import dagster as dg

    from assets.partitions import universe
    from orchestration.definitions import defs
    from orchestration.demo import IngestSummary, default_ranges, last_closed_session, run_partitions

    end = date.fromisoformat(args.end) if args.end else last_closed_session()
    days, years = default_ranges(end, minute_days=args.minute_days, daily_days=args.daily_days)
    symbols = args.symbols.split(",") if args.symbols else universe()[: args.n_symbols]
    print(f"Ingesting {len(symbols)} symbols: 1m bars for {days[0]}..{days[-1]} ({len(days)} sessions), 1d bars for {', '.join(years)}")
    with dg.DagsterInstance.get() as instance:
        summary = run_partitions(defs, instance, days, years, symbols, IngestSummary(), progress=not args.no_progress)
    lake_root = defs.resources["lake"].path  # type: ignore[union-attr,index]
    print("\nSummary")
    print(f"  runs:           {summary.runs} ({len(summary.failed_runs)} failed)")
    for asset, rows in sorted(summary.rows.items()):
        print(f"  rows {asset:<14} {rows:,}")
    print(f"  checks passed:  {summary.checks_passed}")
    print(f"  checks failed:  {sum(summary.checks_failed.values())} {dict(summary.checks_failed) or ''}")
    print(f"  lake:           {lake_root}")
    print(f"  Dagster home:   {home}")
    print("  Open the UI:    make ui   (then http://127.0.0.1:3000)")
    if summary.failed_runs:
        print(f"  failed runs:    {', '.join(summary.failed_runs[:10])}", file=sys.stderr)
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    _ensure_dagster_home()
    import dagster as dg

    from assets.partitions import universe
    from lake.calendar import trading_days
    from orchestration.definitions import defs
    from orchestration.demo import IngestSummary, run_partitions

    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    days = trading_days(start, end) if "1m" in args.timeframes else []
    years = [str(y) for y in range(start.year, end.year + 1)] if "1d" in args.timeframes else []
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else universe()
    unknown = sorted(set(symbols) - set(universe()))
    if unknown:
        print(f"error: {unknown} not in the partitioned universe {universe()} (set QUANTLAKE_UNIVERSE)", file=sys.stderr)
        return 2
    if args.bulk:
        from orchestration.bulk import bulk_backfill

        with dg.DagsterInstance.get() as instance:
            return bulk_backfill(defs, instance, days, years, symbols, progress=not args.no_progress)
    with dg.DagsterInstance.get() as instance:
        summary = run_partitions(defs, instance, days, years, symbols, IngestSummary(), progress=not args.no_progress)
    print(f"{summary.runs} runs, {len(summary.failed_runs)} failed; rows {dict(summary.rows)}; "
          f"checks passed {summary.checks_passed}, failed {dict(summary.checks_failed) or 0}")
    return 1 if summary.failed_runs else 0


def cmd_status(args: argparse.Namespace) -> int:
    from lake.paths import default_lake_root

    root = Path(args.lake) if args.lake else default_lake_root()
    print(f"lake: {root}")
    if not root.exists():
        print("  (empty: run `quantlake demo` or `quantlake ingest`)")
        return 0
    for dataset in sorted(p for p in root.iterdir() if p.is_dir()):
        for tf_dir in sorted(p for p in dataset.iterdir() if p.is_dir()):
            files = list(tf_dir.rglob("*.parquet"))
            symbols = sorted({p.name.split("=", 1)[1] for p in tf_dir.iterdir() if p.name.startswith("symbol=")})
            print(f"  {dataset.name:<11} {tf_dir.name:<14} {len(files):>6} partitions  {', '.join(symbols)}")
    print(f"Dagster home: {os.environ.get('DAGSTER_HOME', REPO_ROOT / '.dagster_home')}")
    return 0


RESEARCH_ASSETS = ("backtest", "parameter_sweep", "walk_forward_analysis", "monte_carlo")


def cmd_research(args: argparse.Namespace) -> int:
    """Materializes one research asset with a run config, on the same instance the UI reads."""
    import json

    _ensure_dagster_home()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import dagster as dg

    from assets import research
    from orchestration.resources import build_resources

    config: dict[str, object] = {}
    if args.config:
        text = Path(args.config).read_text() if Path(args.config).is_file() else args.config
        config = json.loads(text)
    for key in ("strategy", "start", "end", "timeframe"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    if args.params:
        config["params"] = json.loads(args.params)
    if args.grid:
        if args.asset not in ("parameter_sweep", "walk_forward_analysis"):
            print(f"--grid is for sweep and walk-forward, not {args.asset}", file=sys.stderr)
            return 2
        config["grid"] = json.loads(args.grid)
    if args.symbols:
        config["symbols"] = [s.strip().upper() for s in args.symbols.split(",")]
    asset = getattr(research, args.asset)
    lake = build_resources()["lake"]  # from the environment now, not when the code location loaded
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={"lake": lake},
            run_config={"ops": {args.asset: {"config": config}}, "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=False,
        )
    if not result.success:
        print(f"{args.asset} failed; see the run {result.run_id} in the UI", file=sys.stderr)
        return 1
    for event in result.get_asset_materialization_events():
        for key, value in event.materialization.metadata.items():
            if isinstance(value.value, float | int):
                print(f"  {key:<22} {value.value:,.4f}" if isinstance(value.value, float) else f"  {key:<22} {value.value}")
    print(f"report files: {lake.path / 'research' / args.asset}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    """Materializes decision_cycle (decide_job's asset) on the same instance the UI reads."""
    import json

    _ensure_dagster_home()
    import dagster as dg

    from assets import trading
    from orchestration.resources import build_resources

    config: dict[str, object] = {"strategy": args.strategy, "replay": args.replay}
    if args.params:
        config["params"] = json.loads(args.params)
    if args.symbols:
        config["symbols"] = [s.strip().upper() for s in args.symbols.split(",")]
    if args.timeframe:
        config["timeframe"] = args.timeframe
    if args.as_of:
        config["as_of"] = args.as_of
    resources = build_resources()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [trading.decision_cycle],
            instance=instance,
            resources={"lake": resources["lake"], "trading": resources["trading"]},
            run_config={"ops": {"decision_cycle": {"config": config}}, "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=False,
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.step_failure_data.error.message.strip() if failure and failure.step_failure_data.error else ""
        print(f"decision_cycle failed: {reason or 'see the run ' + result.run_id + ' in the UI'}", file=sys.stderr)
        return 1
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    print(meta["decisions"].value)
    for key in ("mode", "as_of", "execute", "hold", "orders_sent", "model_calls", "cost_usd", "equity"):
        print(f"  {key:<14} {meta[key].value}")
    return 0


def cmd_kill_switch(args: argparse.Namespace) -> int:
    """Cancel open orders, flatten, and halt trading until `quantlake resume`."""
    from orchestration.jobs import kill_switch
    from orchestration.resources import trading_resource

    closing = kill_switch(trading_resource(), f"cli-{os.getpid()}", args.reason)
    print(f"halted: {args.reason}; {len(closing)} closing order(s) sent. Resume with: quantlake resume --by NAME")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestration.jobs import resume
    from orchestration.resources import trading_resource
    from trading.execution import ExecutionError

    try:
        resume(trading_resource(), f"cli-{os.getpid()}", args.by, args.reason or "")
    except ExecutionError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"trading resumed by {args.by}")
    return 0


TIMEFRAMES = ("1m", "5m", "15m", "1h", "1d")


def _research_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="run config as JSON text or a JSON file (the launchpad's 'config' block)")
    parser.add_argument("--strategy", help="built-in name or package.module:ATTRIBUTE")
    parser.add_argument("--params", help='strategy parameters as JSON, e.g. \'{"fast": 10, "slow": 40}\' (fixed in a sweep)')
    parser.add_argument("--grid", help='sweep/walk-forward: values per swept parameter as JSON, e.g. \'{"fast": [5, 10], "slow": [40, 80]}\'')
    parser.add_argument("--symbols", help="comma-separated symbols")
    parser.add_argument("--timeframe", help="1m, 5m, 15m, 1h or 1d")
    parser.add_argument("--start", help="first bar (YYYY-MM-DD)")
    parser.add_argument("--end", help="end, exclusive (YYYY-MM-DD)")
    parser.set_defaults(func=cmd_research)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantlake", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="ingest the default universe and range on the embedded defaults")
    demo.add_argument("--end", help="last session (YYYY-MM-DD); default: the last closed session")
    demo.add_argument("--minute-days", type=int, default=20, help="sessions of 1m bars (default 20)")
    demo.add_argument("--daily-days", type=int, default=252, help="sessions of daily bars (default 252)")
    demo.add_argument("--n-symbols", type=int, default=5, help="first N symbols of the universe (default 5)")
    demo.add_argument("--symbols", help="comma-separated symbols instead of the universe")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    ingest = sub.add_parser("ingest", help="materialize bars (and derived data) for a range and symbols")
    ingest.add_argument("--start", required=True, help="first day (YYYY-MM-DD)")
    ingest.add_argument("--end", required=True, help="last day (YYYY-MM-DD)")
    ingest.add_argument("--symbols", help="comma-separated symbols (default: the universe)")
    ingest.add_argument("--timeframes", default="1m,1d", help="1m, 1d or both (default 1m,1d)")
    ingest.add_argument(
        "--bulk", action="store_true",
        help="write the partitions directly (fetch, validate, write overlapped) instead of one Dagster run each; "
        "for first backfills. The UI then shows them as reported materializations.",
    )
    ingest.add_argument("--no-progress", action="store_true")
    ingest.set_defaults(func=cmd_ingest)

    research = sub.add_parser("research", help="materialize a research asset (backtest, sweep, walk-forward, Monte Carlo)")
    research.add_argument("asset", choices=RESEARCH_ASSETS)
    _research_arguments(research)
    # The same, one subcommand per research asset.
    for command, asset in (("backtest", "backtest"), ("sweep", "parameter_sweep"), ("walk-forward", "walk_forward_analysis"), ("monte-carlo", "monte_carlo")):
        _research_arguments(sub.add_parser(command, help=f"materialize {asset} (same options as research)")).set_defaults(asset=asset)

    decide = sub.add_parser("decide", help="run one decision cycle (agents, hard limits, ledger; orders in paper/live)")
    decide.add_argument("--strategy", default="sma_cross", help="built-in name or package.module:ATTRIBUTE")
    decide.add_argument("--params", help="strategy parameters as JSON")
    decide.add_argument("--symbols", help="comma-separated symbols (default: the universe)")
    decide.add_argument("--timeframe", help="1m, 5m, 15m, 1h or 1d (default 1d)")
    decide.add_argument("--as-of", dest="as_of", help="replay the cycle of a past bar (ISO time)")
    decide.add_argument("--replay", action="store_true", help="cached model answers only (QUANTLAKE_LLM_CACHE)")
    decide.set_defaults(func=cmd_decide)

    kill = sub.add_parser("kill-switch", help="cancel open orders, flatten all positions, halt until resume")
    kill.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    kill.set_defaults(func=cmd_kill_switch)

    resume = sub.add_parser("resume", help="lift a kill switch or circuit-breaker halt")
    resume.add_argument("--by", required=True, help="who resumes (recorded in the ledger)")
    resume.add_argument("--reason", help="why")
    resume.set_defaults(func=cmd_resume)

    status = sub.add_parser("status", help="what is in the lake")
    status.add_argument("--lake", help="lake root (default: QUANTLAKE_LAKE_DIR or data/lake)")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
