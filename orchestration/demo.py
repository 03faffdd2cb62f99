"""The demo: the platform end to end on the embedded defaults, through the real jobs and assets.

Ingest and validate the universe (daily bars and the last 1-minute session through the Dagster jobs,
one run per partition; the earlier minute sessions through the bulk path, reported to the instance)
and its headlines for the last DEMO_NEWS_SESSIONS sessions (the `news` dataset, one run per day), then a
backtest with its report, a parameter sweep, a decision cycle with the rule agents and a simulated
paper session with its drift report. Everything runs in process against the persistent
Dagster instance (DAGSTER_HOME), so the UI opened afterwards shows the same runs, materializations
and check results. The demo only orchestrates: every number comes from an asset's metadata.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from tqdm import tqdm

from assets.partitions import (
    DEMO_DAILY_SESSIONS,
    DEMO_MINUTE_SESSIONS,
    add_symbols,
    daily_key,
    intraday_key,
    recent_sessions,
    unknown_periods,
)
from assets.partitions import last_closed_session as _last_closed_session
from lake.bulk import BulkSummary
from orchestration.runs import RunFailed, materialize, step_failure

# Step logs still reach the instance (and the UI); the terminal shows the progress bar, and a failed
# run is told in one line from its error (IngestSummary.errors), without Dagster's stack trace.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class IngestSummary:
    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)
    checks_passed: int = 0
    checks_failed: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # "<partition>: <what went wrong>" per failed run
    unexpected: int = 0  # failed runs whose error is not bad input (a bug, a crash)

    def add(self, label: str, result: dg.ExecuteInProcessResult) -> None:
        self.runs += 1
        if not result.success:
            self.failed_runs.append(label)
            failure = step_failure(result)
            self.errors.append(f"{label}: {failure.message if failure else 'failed'}")
            self.unexpected += 0 if failure and failure.expected else 1
        for event in result.get_asset_materialization_events():
            mat = event.materialization
            rows = mat.metadata.get("dagster/row_count")
            if rows is not None:
                self.rows[mat.asset_key.to_user_string()] += int(rows.value)  # type: ignore[arg-type]
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                self.checks_passed += 1
            else:
                self.checks_failed[evaluation.check_name] += 1


def last_closed_session(now: datetime | None = None, exchange: str = "XNYS") -> date:
    return _last_closed_session(now or datetime.now(UTC), exchange)


def default_ranges(end: date, minute_days: int = DEMO_MINUTE_SESSIONS, daily_days: int = DEMO_DAILY_SESSIONS) -> tuple[list[date], list[str]]:
    """The last `minute_days` sessions for 1m bars, and the years covering the last `daily_days` sessions
    (by default where the partitions start: assets.partitions.default_starts)."""
    minute_sessions = recent_sessions(end, minute_days)
    years = sorted({str(d.year) for d in recent_sessions(end, daily_days)})
    return minute_sessions, years


def run_partitions(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    days: Iterable[date],
    years: Iterable[str],
    symbols: list[str],
    summary: IngestSummary,
    progress: bool = True,
) -> IngestSummary:
    work: list[tuple[str, str, dg.MultiPartitionKey]] = [
        ("ingest_daily_job", f"1d {y} {s}", daily_key(y, s)) for y in years for s in symbols
    ] + [("ingest_intraday_job", f"1m {d} {s}", intraday_key(d.isoformat(), s)) for d in days for s in symbols]
    jobs = {name: defs.resolve_job_def(name) for name in {w[0] for w in work}}
    for name, job in jobs.items():
        missing = unknown_periods(job.partitions_def, [key for job_name, _, key in work if job_name == name])  # type: ignore[arg-type]
        if missing:
            raise ValueError(
                f"{name}: no partition {missing[0]} ({len(missing)} missing): it is before QUANTLAKE_PARTITION_START "
                f"(default: where the demo's data starts) or after today; set QUANTLAKE_PARTITION_START and reload"
            )
    add_symbols(instance, symbols)
    for job_name, label, key in tqdm(work, desc="ingest", unit="partition", disable=not progress):
        result = jobs[job_name].execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        summary.add(label, result)
    return summary


def run_news(
    defs: dg.Definitions, instance: dg.DagsterInstance, days: Iterable[date], summary: IngestSummary, progress: bool = True
) -> IngestSummary:
    """The `news` dataset (the universe's headlines, validated) for `days`, one ingest_news_job run per
    trading day, counted in `summary` like the bars (rows under `news`, its checks with the others)."""
    job = defs.resolve_job_def("ingest_news_job")
    for day in tqdm(list(days), desc="news", unit="day", disable=not progress):
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False, run_config=QUIET)
        summary.add(f"news {day}", result)
    return summary


# --- the demo end to end -------------------------------------------------------------------------

RESEARCH_STRATEGY = "sma_cross"
# Headlines for the last few sessions only: one run per day (~0.5 s each unloaded, 4 s at load 13 on
# 2 cores), and a decision reads the recent ones.
DEMO_NEWS_SESSIONS = 5


@dataclass
class Step:
    """One asset materialized by the demo: its metadata values, or why it failed."""

    asset: str
    seconds: float
    values: dict[str, Any] = field(default_factory=dict)
    error: RunFailed | None = None


@dataclass
class DemoReport:
    symbols: list[str]
    days: list[date]
    years: list[str]
    ingest: IngestSummary = field(default_factory=IngestSummary)
    bulk: BulkSummary | None = None
    ingest_seconds: float = 0.0
    steps: dict[str, Step] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        return [*self.ingest.errors, *(f"{s.asset}: {s.error.message}" for s in self.steps.values() if s.error)]


def bulk_minutes(defs: dg.Definitions, instance: dg.DagsterInstance, days: list[date], symbols: list[str], *, progress: bool) -> BulkSummary | None:
    """1-minute bars of `days` through lake.bulk (validated by the same rules, bad rows quarantined),
    each partition reported to the instance as a materialization, as `quantlake ingest --bulk` does."""
    from lake.bulk import bulk_ingest
    from orchestration.bulk import _ranges, _report
    from orchestration.settings import settings

    lake, market_data = defs.resources["lake"], defs.resources["market_data"]  # type: ignore[index]
    total: BulkSummary | None = None
    for timeframe, period, start, end in _ranges(days, [], market_data.exchange, datetime.now(UTC)):  # type: ignore[union-attr]
        with tqdm(desc=f"bulk {timeframe}", unit="bar", unit_scale=True, disable=not progress, leave=False) as bar:
            summary = bulk_ingest(
                market_data.build(timeframe), symbols, timeframe, start, end, lake.path,  # type: ignore[union-attr]
                period=period, exchange=market_data.exchange, on_chunk=lambda part: bar.update(part.rows),  # type: ignore[union-attr]
                max_jump=settings().max_jump,  # QUANTLAKE_MAX_JUMP
            )
        _report(instance, timeframe, summary)
        total = summary
    return total


def _values(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        values |= {key: entry.value for key, entry in event.materialization.metadata.items()}
    return values


def demo_steps(symbols: list[str], start: str) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(asset, run config, resources) of the demo's research and trading steps, in order."""
    research = {"strategy": RESEARCH_STRATEGY, "symbols": symbols[:3], "start": start}
    return [
        ("backtest", research, ("lake",)),
        ("parameter_sweep", research, ("lake",)),
        ("decision_cycle", {"symbols": symbols}, ("lake", "trading")),
        ("paper_session", {"symbols": symbols[:3], "start": start}, ("lake", "trading")),
    ]


def warm_up_job(defs: dg.Definitions, symbols: list[str], start: str) -> dict[str, Any] | None:
    """What the research and trading steps will compile (orchestration.demo_warmup.spec), from the
    same run configs and the trading resource's limits; None if they cannot be built (the step then
    fails with its own message, and nothing is warmed)."""
    from orchestration.demo_warmup import spec
    from trading.session import sizing_limits

    steps = {name: config for name, config, _ in demo_steps(symbols, start)}
    try:
        limits = defs.resources["trading"].pipeline().limits  # type: ignore[union-attr,index]
        paper_symbols = steps["paper_session"]["symbols"]
        return spec(steps["backtest"], steps["paper_session"], sizing_limits(limits, paper_symbols).model_dump())
    except Exception:  # noqa: BLE001  # a bad config is the step's to report, not the warm-up's
        return None


def run_demo(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    symbols: list[str],
    days: list[date],
    years: list[str],
    progress: bool = True,
    say: Callable[[str], None] = print,
    warm_up: bool | None = None,
) -> DemoReport:
    """Ingest, backtest, sweep, decide, paper session; a failed step is recorded and the rest go on.

    With `warm_up`, the research steps' numba kernels compile in a side process during the ingest
    (orchestration.demo_warmup: the ingest uses none of them), so on a fresh clone the ~25 s of
    compiling runs on the other core instead of after the ingest. None (default): only when a core
    is idle (`demo_warmup.spare_core`); on a busy machine the side process only slows the ingest
    (measured: the same wall time at a load of 1-3 on 2 cores, ~8 s more CPU in all)."""
    from orchestration import demo_warmup

    begin = time.perf_counter()
    report = DemoReport(symbols, days, years)
    start = f"{years[0]}-01-01" if years else days[0].isoformat()
    if warm_up is None:
        warm_up = demo_warmup.spare_core()
    job = warm_up_job(defs, symbols, start) if warm_up else None
    warming = demo_warmup.start(job) if job is not None else None
    try:
        _ingest(defs, instance, report, progress=progress, say=say)
        report.ingest_seconds = time.perf_counter() - begin
        if warming is not None:
            waited = time.perf_counter()
            ready = warming.wait()
            waited_s = time.perf_counter() - waited
            say(f"      research kernels in numba's cache (a side process compiled them during the ingest; waited {waited_s:.0f} s)"
                if ready else "      research kernels not warmed: the steps compile them")
        _steps(defs, instance, report, start, progress=progress, say=say)
    finally:
        if warming is not None:
            warming.stop()
    report.seconds = time.perf_counter() - begin
    return report


def _ingest(defs: dg.Definitions, instance: dg.DagsterInstance, report: DemoReport, *, progress: bool, say: Callable[[str], None]) -> None:
    symbols, days, years = report.symbols, report.days, report.years
    say(f"[1/5] ingest {len(symbols)} symbols: daily bars for {', '.join(years)}, 1-minute bars for {len(days)} sessions ({days[0]}..{days[-1]})")
    run_partitions(defs, instance, [], years, symbols, report.ingest, progress=progress)
    if len(days) > 1:
        report.bulk = bulk_minutes(defs, instance, days[:-1], symbols, progress=progress)
    run_partitions(defs, instance, days[-1:], [], symbols, report.ingest, progress=progress)
    news_days = days[-DEMO_NEWS_SESSIONS:]
    say(f"      headlines (news) for the last {len(news_days)} sessions")
    run_news(defs, instance, news_days, report.ingest, progress=progress)


def _steps(defs: dg.Definitions, instance: dg.DagsterInstance, report: DemoReport, start: str, *, progress: bool, say: Callable[[str], None]) -> None:
    """The backtest, the sweep, the decision cycle and the paper session, one run each."""
    from assets import research, trading

    assets = {a.key.to_user_string(): a for a in (research.backtest, research.parameter_sweep, trading.decision_cycle, trading.paper_session)}
    for number, (name, config, needs) in enumerate(demo_steps(report.symbols, start), start=2):
        say(f"[{number}/5] {name}")
        t0 = time.perf_counter()
        step = Step(name, 0.0)
        try:
            result = materialize(
                [assets[name]], instance=instance, resources={k: defs.resources[k] for k in needs},  # type: ignore[index]
                config={name: config}, label=name, progress=progress,
            )
            step.values = _values(result)
        except RunFailed as failure:
            step.error = failure
        step.seconds = time.perf_counter() - t0
        report.steps[name] = step


def swept_names(strategy: str, params: Mapping[str, Any], grid: Mapping[str, Any]) -> list[str]:
    """The parameters a sweep varies: the grid's, else the strategy's declared ranges minus the fixed ones."""
    from strategies.registry import load_strategy

    if grid:
        return list(grid)
    return [k for k in load_strategy(strategy).params_model.sweep_ranges() if k not in params]


def winning(values: Mapping[str, Any], names: Iterable[str]) -> str:
    """'fast=5, slow=20' from a sweep's best_params metadata."""
    best = values.get("best_params") or {}
    return ", ".join(f"{k}={best[k]}" for k in names if k in best) or ", ".join(f"{k}={v}" for k, v in best.items())


def _pct(value: Any) -> str:
    return f"{float(value):.1%}" if value is not None else "n/a"


def _rows(report: DemoReport) -> dict[str, int]:
    rows = dict(report.ingest.rows)
    if report.bulk is not None:
        rows["bars_1m"] = rows.get("bars_1m", 0) + report.bulk.clean_rows
    return rows


def format_summary(report: DemoReport, *, lake: Path, home: Path, ledger: str) -> str:
    """The demo's one summary: data, checks, the backtest, the sweep, decisions, paper session, where things are."""
    ing, bulk = report.ingest, report.bulk
    lines = [f"Summary ({report.seconds:.0f} s: ingest {report.ingest_seconds:.0f} s, "
             + ", ".join(f"{s.asset} {s.seconds:.0f} s" for s in report.steps.values()) + ")", "",
             f"Data ({len(report.symbols)} symbols: {', '.join(report.symbols)})"]
    for asset, n in sorted(_rows(report).items()):
        lines.append(f"  {asset:<16}{n:>10,} rows")
    failed_checks = sum(ing.checks_failed.values())
    lines.append(f"  daily bars for {', '.join(report.years)}, the last 1m session ({report.days[-1]}) and headlines (news) for "
                 f"the last {min(len(report.days), DEMO_NEWS_SESSIONS)} sessions through the ingest jobs: "
                 f"{ing.runs} runs ({len(ing.failed_runs)} failed), checks {ing.checks_passed} passed, {failed_checks} failed"
                 f"{' ' + str(dict(ing.checks_failed)) if failed_checks else ''}")
    if bulk is not None:
        warned = ", ".join(f"{rule} {n} rows" for rule, n in sorted(bulk.failed_checks.items()))
        lines.append(f"  the {len(report.days) - 1} 1m sessions before it in bulk (same rules): {bulk.partitions} partitions, "
                     f"{bulk.quarantined_rows:,} rows quarantined{'; flagged: ' + warned if warned else ''}")
    steps = report.steps

    def section(name: str, title: str, body: Callable[[dict[str, Any]], list[str]]) -> None:
        step = steps.get(name)
        if step is None:
            return
        if step.error is not None:
            lines.extend(["", f"{title}: FAILED: {step.error.message}"])
        else:
            lines.extend(["", title, *body(step.values)])

    research_symbols = ", ".join(report.symbols[:3])
    section("backtest", f"Backtest ({RESEARCH_STRATEGY} on {research_symbols}, daily bars)", lambda v: [
        f"  total return {_pct(v.get('total_return'))}, CAGR {_pct(v.get('cagr'))}, Sharpe {float(v.get('sharpe', 0.0)):.2f}, "
        f"max drawdown {_pct(v.get('max_drawdown'))}, {int(v.get('trade_count', 0))} trades, win rate {_pct(v.get('win_rate'))}",
        f"  report: {v.get('report')}",
    ])
    section("parameter_sweep", f"Sweep ({RESEARCH_STRATEGY} on {report.symbols[0]})", lambda v: [
        f"  {v.get('combinations')} combinations; best {winning(v, swept_names(RESEARCH_STRATEGY, {}, {}))}: "
        f"total return {_pct(v.get('best_total_return'))}",
        f"  heatmap: {lake / 'research' / 'parameter_sweep' / 'report' / 'index.html'}",
    ])
    section("decision_cycle", "Decisions (rule agents, hard limits)", lambda v: [
        f"  {int(v.get('execute', 0)) + int(v.get('hold', 0))} symbols as of {v.get('as_of')}: {v.get('execute')} EXECUTE, {v.get('hold')} HOLD; "
        f"{v.get('orders_sent')} orders sent ({v.get('mode')} mode)",
    ])
    section("paper_session", f"Paper session (simulated broker, {research_symbols})", lambda v: [
        f"  {v.get('bars')} bars, {v.get('orders')} orders, {v.get('fills')} fills",
        f"  drift: {_first_line(str(v.get('drift', '')))}",
        "  equity vs backtest, trades by symbol and weekday, the drift report: UI > Assets > paper_session",
    ])
    lines += [
        "",
        "Where",
        f"  lake           {lake}",
        f"  Dagster home   {home}",
        f"  ledger         {ledger}",
        "",
        "Next",
        f"  {_ui_command(lake, home)}   then http://127.0.0.1:3000 (Assets: the runs, materializations and checks above)",
        "  .venv/bin/quantlake research backtest --strategy sma_cross --params '{\"fast\": 10, \"slow\": 40}' --symbols AAPL,MSFT",
    ]
    return "\n".join(lines)


def _ui_command(lake: Path, home: Path) -> str:
    """`make ui`, with the settings the demo ran with when they are not the defaults the UI would use."""
    from lake.paths import REPO_ROOT

    env = [f"QUANTLAKE_LAKE_DIR={lake}"] if lake.resolve() != (REPO_ROOT / "data" / "lake").resolve() else []
    env += [f"DAGSTER_HOME={home}"] if home.resolve() != (REPO_ROOT / ".dagster_home").resolve() else []
    return " ".join([*env, "make ui"])


def _first_line(markdown: str) -> str:
    for line in markdown.splitlines():
        text = line.strip().strip("#").strip().replace("**", "")
        if text:
            return text[:160]
    return "n/a"
