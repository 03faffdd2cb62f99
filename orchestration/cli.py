"""`quantlake`: the command line over the same jobs and libraries as the UI."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lake.filesystem import ObjectPath


class UsageError(Exception):
    """Bad input the user can fix: `message` says what is wrong, `hint` what to do (exit code 2)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


FILL_THE_LAKE = "fill the lake first: `make demo` (the default universe), or `quantlake ingest --start YYYY-MM-DD --end YYYY-MM-DD --symbols A,B`"


def _ensure_dagster_home() -> Path:
    # The default instance (SQLite, run monitoring and run retries on, no telemetry banner in the
    # middle of a progress bar): orchestration/default_instance.yaml, unless the home has its own.
    from orchestration.home import ensure_dagster_home

    return ensure_dagster_home()


def _json(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON ({exc.msg} at character {exc.pos}): {text[:80]}",
                         "quote it for the shell, e.g. --params '{\"fast\": 10, \"slow\": 40}'") from exc


def _day(option: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r} is not a date", "write it as YYYY-MM-DD, e.g. 2025-01-02") from exc


def _symbols(text: str) -> list[str]:
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols:
        raise UsageError(f"--symbols {text!r} names no symbol", "give them comma-separated, e.g. --symbols AAPL,MSFT")
    return symbols


def _range(start: str | None, end: str | None) -> None:
    first, last = (_day("--start", start) if start else None), (_day("--end", end) if end else None)
    if first and last and first >= last:
        raise UsageError(f"empty range: --start {first} is not before --end {last} (the end is exclusive)", "give an --end after --start")


def _universe() -> list[str]:
    """QUANTLAKE_UNIVERSE's symbols, sorted as the schedules take them (only that variable is read)."""
    from orchestration.settings import settings

    return sorted(settings(only=("QUANTLAKE_UNIVERSE",)).universe_symbols)


def cmd_demo(args: argparse.Namespace) -> int:
    """Ingest, validate, backtest, sweep, decide and trade on paper, through the real jobs; one summary."""
    began = time.perf_counter()
    from orchestration.settings import settings

    if lake_url := settings(only=("QUANTLAKE_LAKE_URL",)).lake_url:
        # Its seeded synthetic bars would mix into a deployment's bucket; its summary reads a local folder.
        raise UsageError(f"quantlake demo builds a local lake, and QUANTLAKE_LAKE_URL is set ({lake_url})", "unset QUANTLAKE_LAKE_URL to run the demo")
    home = _ensure_dagster_home()

    if (mode := settings(only=("QUANTLAKE_MODE",)).mode) not in ("validation", "simulation"):
        print(f"note: the demo sends no orders; QUANTLAKE_MODE={mode} is ignored here (validation mode)")
        os.environ["QUANTLAKE_MODE"] = "validation"  # for the demo's runs, in this process and the ones it starts
    import warnings

    import dagster as dg

    # Dagster's notes for developers (beta logging config, the ingest job's mixed backfill policies)
    # would land between the demo's progress lines and say nothing a user can act on.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", message="Asset job .* materializes assets with varying BackfillPolicies")

    from orchestration.definitions import defs
    from orchestration.demo import default_ranges, format_summary, last_closed_session, run_demo
    from trading.ledger.store import default_url, redact_url

    end = _day("--end", args.end) if args.end else last_closed_session()
    if args.minute_days < 1 or args.daily_days < 1:
        raise UsageError("--minute-days and --daily-days must be at least 1")
    days, years = default_ranges(end, minute_days=args.minute_days, daily_days=args.daily_days)
    symbols = _symbols(args.symbols) if args.symbols else _universe()
    with dg.DagsterInstance.get() as instance:
        report = run_demo(defs, instance, symbols=symbols, days=days, years=years, progress=not args.no_progress)
    lake_root = defs.resources["lake"].path  # type: ignore[union-attr,index]
    ledger = redact_url(defs.resources["trading"].ledger_url or default_url())  # type: ignore[union-attr,index]  # the demo's own ledger (URL or path)
    report.seconds = time.perf_counter() - began  # the whole command, imports included
    print()
    print(format_summary(report, lake=lake_root, home=home, ledger=ledger))
    if report.failures:
        print(f"\n{len(report.failures)} step(s) failed:", file=sys.stderr)
        for line in report.failures[:10]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    _ensure_dagster_home()
    import dagster as dg

    from lake.calendar import trading_days
    from orchestration.definitions import defs
    from orchestration.demo import IngestSummary, run_partitions

    start, end = _day("--start", args.start), _day("--end", args.end)
    if start > end:
        raise UsageError(f"empty range: --start {start} is after --end {end}", "give an --end on or after --start")
    if args.dataset == "news":
        return _ingest_news(args, start, end)
    timeframes = {t.strip() for t in args.timeframes.split(",") if t.strip()}
    if not timeframes or timeframes - {"1m", "1d"}:
        raise UsageError(f"--timeframes {args.timeframes!r}: expected 1m, 1d or 1m,1d")
    days = trading_days(start, end) if "1m" in timeframes else []
    years = [str(y) for y in range(start.year, end.year + 1)] if "1d" in timeframes else []
    if "1m" in timeframes and not days:
        raise UsageError(f"no trading session from {start} to {end} (weekend or holiday)", "widen the range, or ingest --timeframes 1d")
    universe = _universe()
    symbols = _symbols(args.symbols) if args.symbols else universe
    unknown = sorted(set(symbols) - set(universe))
    if unknown:
        raise UsageError(f"{', '.join(unknown)} not in the universe {','.join(universe)}", "add them to QUANTLAKE_UNIVERSE, or leave them out")
    defs = _with_files(defs, args)
    if args.bulk:
        from orchestration.bulk import bulk_backfill

        with dg.DagsterInstance.get() as instance:
            return bulk_backfill(defs, instance, days, years, symbols, progress=not args.no_progress)
    with dg.DagsterInstance.get() as instance:
        summary = run_partitions(defs, instance, days, years, symbols, IngestSummary(), progress=not args.no_progress)
    print(f"{summary.runs} runs, {len(summary.failed_runs)} failed; rows {dict(summary.rows)}; "
          f"checks passed {summary.checks_passed}, failed {dict(summary.checks_failed) or 0}")
    for line in summary.errors[:5]:
        print(f"  failed {line}", file=sys.stderr)
    if len(summary.errors) > 5:
        print(f"  ... and {len(summary.errors) - 5} more; each run's log is in the UI (make ui)", file=sys.stderr)
    if not summary.failed_runs:
        return 0
    return 2 if summary.unexpected == 0 else 1  # 2: every failure was bad input, told above


def _ingest_news(args: argparse.Namespace, start: date, end: date) -> int:
    """`ingest --dataset news`: one ingest_news_job run per trading day (the universe's headlines),
    in process on the instance; `--files` imports CSV/JSON-lines headlines instead of the source."""
    import dagster as dg

    from assets.news import NewsResource
    from assets.partitions import trading_day_partitions
    from lake.calendar import trading_days
    from orchestration.definitions import defs
    from orchestration.demo import QUIET, IngestSummary

    if args.symbols or args.bulk or args.column_map:
        raise UsageError("--dataset news takes every symbol of the universe per day, one run a day", "leave out --symbols, --bulk and --column-map")
    days = trading_days(start, end)
    if not days:
        raise UsageError(f"no trading session from {start} to {end} (weekend or holiday)", "widen the range")
    missing = [d for d in days if not trading_day_partitions.has_partition_key(d.isoformat())]
    if missing:
        raise UsageError(f"no news partition for {missing[0]} ({len(missing)} missing)", "set QUANTLAKE_PARTITION_START to an earlier day")
    resources = dict(defs.resources or {})
    if args.files:
        resources["news_source"] = NewsResource(source="files", files_glob=args.files, files_timezone=args.files_tz or "America/New_York")
    job = defs.resolve_job_def("ingest_news_job")
    summary = IngestSummary()
    with dg.DagsterInstance.get() as instance:
        for day in days:
            result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, resources=resources, raise_on_error=False, run_config=QUIET)
            summary.add(f"news {day}", result)
    print(f"{summary.runs} runs, {len(summary.failed_runs)} failed; rows {dict(summary.rows)}; "
          f"checks passed {summary.checks_passed}, failed {dict(summary.checks_failed) or 0}")
    for line in summary.errors[:5]:
        print(f"  failed {line}", file=sys.stderr)
    if summary.checks_failed:
        print("  quarantined headlines and their reasons: <lake>/quarantine/news/date=YYYY-MM-DD/", file=sys.stderr)
    if summary.failed_runs:
        return 2 if summary.unexpected == 0 else 1
    return 1 if summary.checks_failed else 0


def cmd_estimate(args: argparse.Namespace) -> int:
    """Expected model spend per run, day and month, and what is left of the budgets (nothing is run)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from orchestration.resources import trading_resource
    from trading.estimate import pipeline_estimate

    day = date.fromisoformat(args.day) if args.day else datetime.now(UTC).astimezone(ZoneInfo("America/New_York")).date()  # the CLI's edge
    resource = trading_resource()
    symbols = len(args.symbols.split(",")) if args.symbols else len(_universe())
    ledger = resource.ledger()
    try:
        report = pipeline_estimate(ledger, resource.pipeline(), symbols=symbols, day=day, runs_per_day=args.runs_per_day)
    finally:
        ledger.close()
    print(f"pipeline {report['pipeline']}: {report['model_calls_per_run']} model calls a run at most ({symbols} symbols), ${report['usd_per_call']:.6f} a call ({report['basis']})")
    print(f"  per run   ${report['run_usd']:.4f}")
    print(f"  per day   ${report['day_usd']:.4f}  ({report['runs_per_day']} runs)")
    print(f"  per month ${report['month_usd']:.4f}  ({report['sessions_in_month']} sessions in {report['month']})")
    for period, spent, left in (("day", "spent_today_usd", "left_today_usd"), ("month", "spent_month_usd", "left_month_usd")):
        limit = report["budget"]["per_" + period]
        budget = f"budget ${limit:.4f}, left ${report[left]:.4f}" if limit is not None else "no budget"
        print(f"  this {period:<5} spent ${report[spent]:.4f}; {budget}")
    if report["blocked"]:
        print(f"  the next run would not start: {report['blocked']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lake.filesystem import lake_location
    from orchestration.settings import settings

    current = settings()
    root = lake_location(args.lake, endpoint=current.aws_endpoint_url or None) if args.lake else current.lake_location
    print(f"lake: {root}")
    files = _lake_files(root)
    if not files:
        print("  (empty: run `quantlake demo` or `quantlake ingest`)")
        return 0
    for line in _status_lines(files):
        print(line)
    from orchestration.home import dagster_home

    print(f"Dagster home: {dagster_home()}")
    return 0


def _lake_files(root: Path | ObjectPath) -> list[tuple[str, ...]]:
    """Every file of the lake as its path's parts under the root: a local folder's, or the object
    store's keys under the prefix (one listing)."""
    from lake.filesystem import ObjectPath

    if isinstance(root, ObjectPath):
        return [tuple(f.key.removeprefix(f"{root.key}/").split("/")) for f in root.files()]
    return [p.relative_to(root).parts for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def _status_lines(files: list[tuple[str, ...]]) -> list[str]:
    """Per dataset and timeframe folder: its Parquet files and symbols; news by day."""
    lines = []
    for dataset in sorted({f[0] for f in files if len(f) > 1}):
        inside = [f[1:] for f in files if f[0] == dataset and len(f) > 1]
        if dataset == "news":  # news/date=YYYY-MM-DD: one line for all its days
            days = sorted({f[0][5:] for f in inside if f[0].startswith("date=") and len(f) > 1})
            lines.append(f"  {'news':<11} {'by day':<14} {len(days):>6} partitions  {days[0] if days else ''} to {days[-1] if days else ''}")
            continue
        for folder in sorted({f[0] for f in inside if len(f) > 1}):
            under = [f[1:] for f in inside if f[0] == folder and len(f) > 1]
            parquet = sum(f[-1].endswith(".parquet") for f in under)
            symbols = sorted({f[0].split("=", 1)[1] for f in under if f[0].startswith("symbol=") and len(f) > 1})
            lines.append(f"  {dataset:<11} {folder:<14} {parquet:>6} partitions  {', '.join(symbols)}")
    return lines


RESEARCH_ASSETS = ("backtest", "parameter_sweep", "walk_forward_analysis", "monte_carlo")


PERCENT = frozenset({"total_return", "cagr", "max_drawdown", "win_rate", "exposure", "best_total_return", "oos_total_return"})


def _config_file(text: str) -> dict[str, Any]:
    path = Path(text)
    if path.is_file():
        config = _json(f"--config {path}", path.read_text())
    elif text.lstrip().startswith("{"):
        config = _json("--config", text)
    else:
        raise UsageError(f"--config {text!r}: no such file, and not JSON text", "give a JSON file or the launchpad's config block as JSON")
    if not isinstance(config, dict):
        raise UsageError("--config must be a JSON object: the launchpad's config block, e.g. {\"strategy\": \"sma_cross\"}")
    return config


def _check_strategy(asset: str, config: dict[str, Any]) -> list[str]:
    """The strategy loads and its parameters (and grid) are valid, before a run starts; the swept names."""
    from pydantic import ValidationError

    from backtests.sweep import expand_grid
    from orchestration.demo import swept_names
    from strategies.registry import load_strategy

    strategy = load_strategy(str(config.get("strategy", "sma_cross")))
    params, grid = config.get("params") or {}, config.get("grid") or {}
    if not isinstance(params, dict) or not isinstance(grid, dict):
        raise UsageError("--params and --grid must be JSON objects", "e.g. --params '{\"fast\": 10}' --grid '{\"slow\": [40, 80]}'")
    if asset in ("parameter_sweep", "walk_forward_analysis"):
        expand_grid(strategy, params, grid)  # names the bad parameter or value
        return swept_names(strategy.name, params, grid)
    names = ", ".join(sorted(strategy.params_model.model_fields))
    unknown = sorted(set(params) - set(strategy.params_model.model_fields))
    if unknown:
        raise UsageError(f"{strategy.name}: unknown parameter {', '.join(unknown)}", f"its parameters are {names}")
    try:
        strategy.params(**params)
    except ValueError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else None
        what = "; ".join(f"{e['loc'][0]}={params.get(str(e['loc'][0]))}: {e['msg']}" if e["loc"] else str(e["msg"]).removeprefix("Value error, ")
                         for e in cause.errors()[:2]) if cause else str(exc)
        raise UsageError(f"{strategy.name}: bad parameters: {what}", f"its parameters are {names}") from exc
    return []


def _number(key: str, value: float | int) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.2%}" if key in PERCENT else f"{value:,.3f}"


def cmd_research(args: argparse.Namespace) -> int:
    """Materializes one research asset with a run config, on the same instance the UI reads."""
    _ensure_dagster_home()
    import dagster as dg

    from assets import research
    from orchestration.demo import winning
    from orchestration.resources import build_resources
    from orchestration.runs import materialize

    config: dict[str, Any] = _config_file(args.config) if args.config else {}
    for key in ("strategy", "start", "end", "timeframe"):
        if getattr(args, key):
            config[key] = getattr(args, key)
    if args.params:
        config["params"] = _json("--params", args.params)
    if args.grid:
        if args.asset not in ("parameter_sweep", "walk_forward_analysis"):
            raise UsageError(f"--grid is for sweep and walk-forward, not {args.asset}", "use --params for the backtest's parameters")
        config["grid"] = _json("--grid", args.grid)
    if args.symbols:
        config["symbols"] = _symbols(args.symbols)
    _range(config.get("start"), config.get("end"))
    swept = _check_strategy(args.asset, config)
    asset = getattr(research, args.asset)
    lake = build_resources()["lake"]  # from the environment now, not when the code location loaded
    with dg.DagsterInstance.get() as instance:
        result = materialize(
            [asset], instance=instance, resources={"lake": lake}, config={args.asset: config},
            label=args.asset, progress=False if args.no_progress else None, debug=args.debug,
        )
    values: dict[str, Any] = {k: v.value for e in result.get_asset_materialization_events() for k, v in e.materialization.metadata.items()}
    for key, value in values.items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            print(f"  {key:<22} {_number(key, value)}")
    if "best_params" in values:
        print(f"best parameters: {winning(values, swept)} (total return {_number('total_return', float(values['best_total_return']))}; "
              f"every combination in results.parquet)")
    print(f"report files: {lake.location / 'research' / args.asset}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    """Materializes decision_cycle (decide_job's asset) on the same instance the UI reads."""
    _ensure_dagster_home()
    import dagster as dg

    from assets import trading
    from orchestration.resources import build_resources
    from orchestration.runs import materialize

    config: dict[str, object] = {"strategy": args.strategy, "replay": args.replay}
    if args.params:
        config["params"] = _json("--params", args.params)
    if args.symbols:
        config["symbols"] = _symbols(args.symbols)
    if args.timeframe:
        config["timeframe"] = args.timeframe
    if args.as_of:
        config["as_of"] = args.as_of
    resources = build_resources()
    if resources["trading"].mode in ("paper", "live"):
        resources["trading"].broker()  # a missing key or opt-in is told now, not after the step's retries
    with dg.DagsterInstance.get() as instance:
        result = materialize(
            [trading.decision_cycle], instance=instance, resources={"lake": resources["lake"], "trading": resources["trading"]},
            config={"decision_cycle": config}, label="decision_cycle", progress=False, debug=args.debug,
        )
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    print(meta["decisions"].value)
    for key in ("mode", "as_of", "execute", "hold", "orders_sent", "model_calls", "cost_usd", "equity"):
        print(f"  {key:<14} {meta[key].value}")
    if meta["total_tokens"].value:  # unpriced tokens are in no USD figure: say so beside the cost
        unpriced, models = meta["unpriced_tokens"].value, ", ".join(meta["unpriced_models"].value)  # type: ignore[arg-type]
        print(f"  {'tokens':<14} {meta['total_tokens'].value} ({unpriced} unpriced{f': {models}' if models else ''}; {meta['estimated_tokens'].value} estimated locally)")
    providers: dict[str, Any] = meta["cost_per_provider"].value if "cost_per_provider" in meta else {}  # type: ignore[assignment]
    for provider, p in providers.items():
        failed = ", ".join(f"{kind} {n}" for kind, n in p["failures"].items()) or "none"
        print(f"  {provider}: {p['answers']} answers, failures {failed}, {p['fallbacks']} to the next provider, {p['to_rules']} to the rules, {p['tokens']} tokens")
    return 0


def cmd_kill_switch(args: argparse.Namespace) -> int:
    """Cancel open orders, flatten, and halt trading until `quantlake resume`."""
    from orchestration.jobs import kill_switch
    from orchestration.resources import trading_resource

    # Outside a Dagster run the resource's dg.EnvVar fields hold the variables' names: initializing it
    # reads the keys themselves, as a run would (without this, Alpaca answered 401 to the kill switch).
    with trading_resource().process_config_and_initialize_cm() as trading:
        closing = kill_switch(trading, f"cli-{os.getpid()}", args.reason)
    print(f"halted: {args.reason}; {len(closing)} closing order(s) sent. Resume with: quantlake resume --by NAME")
    return 0


def cmd_trade_manager(args: argparse.Namespace) -> int:
    """Paper/live: follow Alpaca's trade updates and manage each entry's exits until interrupted."""
    import signal
    import threading

    from orchestration.resources import market_data_resource, trading_resource
    from orchestration.settings import settings
    from orchestration.trade_manager_sensor import run_trade_manager

    trading = trading_resource()
    if trading.mode not in ("paper", "live"):
        raise UsageError(f"the trade manager follows Alpaca orders; QUANTLAKE_MODE is {trading.mode!r}", "set QUANTLAKE_MODE=paper (and the Alpaca keys)")
    stop = threading.Event()

    def stop_after_this_pass(signum: int, _frame: object) -> None:
        # Ctrl-C and SIGTERM end the loop between passes: a KeyboardInterrupt thrown into a pass could be
        # lost in the libraries under it (seen 2026-12-02: the suite hung after a SIGINT) or cut an order's recording
        # short. A second Ctrl-C interrupts at once.
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, stop_after_this_pass)
    signal.signal(signal.SIGINT, stop_after_this_pass)
    print(f"trade manager ({trading.mode}): following trade updates, a pass every {args.poll_s:g} s; Ctrl-C to stop", flush=True)
    try:
        stream_url = settings().alpaca_trading_stream_url
        # the bars show target 1 of a one-share entry (Alpaca's bars only: see bar_extremes)
        run_trade_manager(trading, stop, stream_url=stream_url, poll_s=args.poll_s, market_data=market_data_resource())
    except KeyboardInterrupt:
        stop.set()
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestration.jobs import resume
    from orchestration.resources import trading_resource
    from trading.execution import ExecutionError

    try:
        with trading_resource().process_config_and_initialize_cm() as trading:  # the keys, not their names
            resume(trading, f"cli-{os.getpid()}", args.by, args.reason or "")
    except ExecutionError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"trading resumed by {args.by}")
    return 0


TIMEFRAMES = ("1m", "5m", "15m", "1h", "1d")


def cmd_metrics(args: argparse.Namespace) -> int:
    _ensure_dagster_home()
    from orchestration.metrics import run_metrics

    return run_metrics(args.port, args.addr, once=args.once)


def _research_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="run config as JSON text or a JSON file (the launchpad's 'config' block)")
    parser.add_argument("--strategy", help="built-in name or package.module:ATTRIBUTE")
    parser.add_argument("--params", help='strategy parameters as JSON, e.g. \'{"fast": 10, "slow": 40}\' (fixed in a sweep)')
    parser.add_argument("--grid", help='sweep/walk-forward: values per swept parameter as JSON, e.g. \'{"fast": [5, 10], "slow": [40, 80]}\'')
    parser.add_argument("--symbols", help="comma-separated symbols")
    parser.add_argument("--timeframe", choices=TIMEFRAMES, help="1m, 5m, 15m, 1h or 1d")
    parser.add_argument("--start", help="first bar (YYYY-MM-DD)")
    parser.add_argument("--end", help="end, exclusive (YYYY-MM-DD)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal only)")
    parser.set_defaults(func=cmd_research)
    return parser


def cmd_agents(args: argparse.Namespace) -> int:
    """`agents list`: the catalog of pipeline node types; `agents show TYPE`: one type's metadata and config schema."""
    from trading.agents.registry import catalog, catalog_markdown

    types = catalog()
    if args.action == "list":
        print(catalog_markdown(types))
        return 0
    found = [t for t in types if t["type"] == args.type]
    if not found:
        raise UsageError(f"unknown agent type {args.type!r}", "`quantlake agents list` shows the catalog")
    print(json.dumps(found[0], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantlake", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="on an error, the stack trace and Dagster's log too")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the platform end to end on the embedded defaults: ingest, validate, backtest, sweep, decide, paper session"
    )
    demo.add_argument("--end", help="last session (YYYY-MM-DD); default: the last closed session")
    demo.add_argument("--minute-days", type=int, default=20, help="sessions of 1m bars (default 20; the last one through the Dagster job, the others in bulk)")
    demo.add_argument("--daily-days", type=int, default=252, help="sessions of daily bars, ingested as whole years (default 252)")
    demo.add_argument("--symbols", help="comma-separated symbols instead of the whole universe (faster; README commands need the universe)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    ingest.add_argument("--files", help="import your own CSV/Parquet files (a glob, e.g. 'data/*.csv'); header: ts,open,high,low,close,volume[,symbol]")
    ingest.add_argument("--column-map", dest="column_map", help="map the files' header to ours: OURS=THEIRS,..., e.g. ts=Date,open=Open,close=Close")
    ingest.add_argument("--files-tz", dest="files_tz", help="timezone of the files' naive timestamps (default America/New_York)")
    ingest.add_argument("--dataset", choices=("bars", "news"), default="bars", help="bars (default) or news: the universe's headlines per trading day")
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
    decide.add_argument("--timeframe", choices=TIMEFRAMES, help="1m, 5m, 15m, 1h or 1d (default 1d)")
    decide.add_argument("--as-of", dest="as_of", help="replay the cycle of a past bar (ISO time)")
    decide.add_argument("--replay", action="store_true", help="cached model answers only (QUANTLAKE_LLM_CACHE)")
    decide.set_defaults(func=cmd_decide)

    estimate = sub.add_parser("estimate", help="expected model spend per run, day and month from the pipeline's graph and the ledger; budgets left")
    estimate.add_argument("--symbols", help="comma-separated symbols a run decides on (default: the universe)")
    estimate.add_argument("--runs-per-day", dest="runs_per_day", type=int, default=1, help="decide runs a session (default 1)")
    estimate.add_argument("--day", help="the day whose spend counts (YYYY-MM-DD; default: today in New York)")
    estimate.set_defaults(func=cmd_estimate)

    kill = sub.add_parser("kill-switch", help="cancel open orders, flatten all positions, halt until resume")
    kill.add_argument("--reason", required=True, help="why (recorded in the ledger)")
    kill.set_defaults(func=cmd_kill_switch)

    manager = sub.add_parser(
        "trade-manager", help="paper/live: manage each entry's exits on Alpaca (target 1, breakeven stop, target 2)"
    )
    manager.add_argument("--poll-s", dest="poll_s", type=float, default=5.0, help="a full pass every N seconds besides the stream (default 5)")
    manager.set_defaults(func=cmd_trade_manager)

    resume = sub.add_parser("resume", help="lift a kill switch or circuit-breaker halt")
    resume.add_argument("--by", required=True, help="who resumes (recorded in the ledger)")
    resume.add_argument("--reason", help="why")
    resume.set_defaults(func=cmd_resume)

    metrics = sub.add_parser("metrics", help="serve Prometheus metrics over the ledger and the Dagster instance")
    metrics.add_argument("--port", type=int, default=9108, help="port (default 9108)")
    metrics.add_argument("--addr", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    metrics.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    metrics.set_defaults(func=cmd_metrics)

    agents = sub.add_parser("agents", help="the catalog of pipeline node types: list them, or show one (metadata, config schema)")
    agent_actions = agents.add_subparsers(dest="action", required=True)
    agent_actions.add_parser("list", help="every node type: role, cost class, inputs, outputs, data read")
    agent_actions.add_parser("show", help="one node type's metadata and JSON-schema config").add_argument("type")
    agents.set_defaults(func=cmd_agents)

    status = sub.add_parser("status", help="what is in the lake")
    status.add_argument("--lake", help="lake root, a folder or s3://bucket/prefix (default: QUANTLAKE_LAKE_URL, else QUANTLAKE_LAKE_DIR, else data/lake)")
    status.set_defaults(func=cmd_status)
    for subparser in sub.choices.values():  # `quantlake backtest ... --debug` as well as `quantlake --debug backtest ...`
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, the stack trace and Dagster's log too")
    return parser


def _with_files(defs: Any, args: argparse.Namespace) -> Any:
    """`--files`/`--files-tz`/`--column-map`: the definitions with a files source built from them."""
    import dagster as dg

    from assets.resources import MarketDataResource
    from lake.errors import SourceError
    from lake.sources.files import parse_column_map

    current: MarketDataResource = defs.resources["market_data"]
    if not (args.files or args.column_map or args.files_tz):
        return defs
    glob = args.files or (current.files_glob if current.source == "files" else None)
    if not glob:
        raise UsageError("--column-map and --files-tz are for a file import", "add --files 'PATH/*.csv' (or set QUANTLAKE_DATA_SOURCE=files and QUANTLAKE_FILES_GLOB)")
    try:
        column_map = parse_column_map(args.column_map) if args.column_map else current.files_column_map
    except SourceError as exc:
        raise UsageError(f"--column-map: {exc}", "e.g. --column-map ts=Date,open=Open,high=High,low=Low,close=Close,volume=Volume") from exc
    files = MarketDataResource(
        source="files", exchange=current.exchange, files_glob=glob, files_timezone=args.files_tz or current.files_timezone, files_column_map=column_map
    )
    # The ingest jobs with that source in place of the environment's (resources bind when jobs resolve).
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources={**defs.resources, "market_data": files})


def explain(exc: Exception) -> tuple[int, str, str]:
    """(exit code, what is wrong, what to do) for an exception that reached the command line."""
    from dagster import DagsterInvalidConfigError
    from pydantic import ValidationError

    from orchestration.runs import EXPECTED, RunFailed

    if isinstance(exc, UsageError):
        return 2, exc.message, exc.hint
    if isinstance(exc, RunFailed):
        if re.search(r"\bno \w+ bars\b", exc.message):
            return 2, f"{exc.what}: {exc.message}", FILL_THE_LAKE
        hint = f"the run {exc.run_id} in the UI (make ui) has its log; --debug prints the stack trace"
        return (2 if exc.expected else 1), f"{exc.what}: {exc.message}", hint
    if isinstance(exc, DagsterInvalidConfigError):
        unset = sorted({m for e in exc.errors for m in re.findall(r'environment variable "(\w+)" which is not set', e.message)})
        if unset:
            return 2, f"missing setting: {', '.join(unset)} not set", "set it in the environment (keys are read through dg.EnvVar), or QUANTLAKE_DATA_SOURCE=synthetic to run offline"
        found = [ln.strip() for ln in str(exc).splitlines() if re.match(r"\s*Error \d+:", ln)]
        what = "; ".join(re.sub(r"^Error \d+: |\. Expected: .*$", "", ln) for ln in found[:2]) or str(exc).splitlines()[0]
        return 2, f"bad run config: {what}", "the fields and their defaults are in the launchpad (make ui) and in --help"
    if isinstance(exc, ValidationError):
        what = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:2])
        return 2, f"{exc.title}: {what}", "--debug prints the stack trace"
    if isinstance(exc, EXPECTED):
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return 2, "; ".join(lines[:2]) or type(exc).__name__, ""
    return 1, f"{type(exc).__name__}: {exc}", "unexpected: run again with --debug for the stack trace, and report it"


def main(argv: list[str] | None = None) -> int:
    """The command line; expected errors are one or two lines on stderr and exit code 2 (1: a bug or
    a failed run), the stack trace only with --debug."""
    args = build_parser().parse_args(argv)
    try:
        from orchestration.observability import configure_logging

        # JSON (QUANTLAKE_LOG_FORMAT=json) at INFO for a log shipper; on a terminal warnings only, as before.
        from orchestration.settings import settings

        env = settings(only=("QUANTLAKE_LOG_FORMAT", "QUANTLAKE_LOG_LEVEL"))
        configure_logging(level=None if env.log_format == "json" or env.log_level else "WARNING")
        return int(args.func(args))
    except Exception as exc:
        from orchestration.runs import RunFailed

        if args.debug and not isinstance(exc, RunFailed):
            raise
        code, what, hint = explain(exc)
        if args.debug and isinstance(exc, RunFailed):
            print(exc.details, file=sys.stderr)
        print(f"error: {what}", file=sys.stderr)
        if hint:
            print(f"  {hint}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
