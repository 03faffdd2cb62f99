"""`make soak`: the deployment left alone for a month, a quarter or a year on a simulated clock.

    .venv/bin/python scripts/soak.py [--period month|quarter|year | --start YYYY-MM-DD --end YYYY-MM-DD]
                                     [--symbols AAPL,MSFT,NVDA] [--work DIR] [--no-faults] [--seed N]
                                     [--storage-url postgresql://...]

Runs tests/soak/harness.py (the real Definitions, Dagster's own scheduler, sensor and run-queue
iterations at every tick the daemon would see, runs in process), then every check in
tests/soak/checks.py. With faults by default (tests/soak/faults.py: the data source down for a
session, a broker 5xx on an order, the model timing out, a run killed mid-step, a disk full on a lake
write, code-location reloads, the trades-per-day breaker, a kill switch and its resume, on seeded
sessions spread over the period): one line per fault says what the deployment did with it
(tests/soak/fault_report.py), and a fault that hit nothing is a problem. Prints what it ran
(sessions, ticks, runs, orders, ledger events), the time per simulated day, and what is wrong;
exit code 1 if anything is.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from tests.soak.harness import SoakSettings

PERIODS = {  # all 2026: Thanksgiving (holiday) and the half day after it fall in each
    "week": (date(2026, 11, 23), date(2026, 11, 29)),
    "month": (date(2026, 11, 2), date(2026, 11, 30)),
    "quarter": (date(2026, 9, 1), date(2026, 11, 30)),
    "year": (date(2026, 1, 2), date(2026, 12, 31)),
}


class _NotPrintedYet(logging.Filter):
    """The root's handler prints a record only if no logger on its way up wrote it to a stream already:
    our loggers have their own (orchestration.observability, set up by every run), and propagate."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
                return False
            logger = logger.parent if logger.propagate else None
        return True


def setup_logging() -> None:
    """Each line once: warnings and errors (the alerts among them) of the deployment and of Dagster.
    QUANTLAKE_LOG_LEVEL=INFO shows the daemon's every evaluation too (a line per sensor and tick)."""
    os.environ.setdefault("QUANTLAKE_LOG_LEVEL", "WARNING")  # read by each run's logging set-up
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    level = logging.getLevelName(os.environ["QUANTLAKE_LOG_LEVEL"].upper())
    for handler in logging.root.handlers:
        handler.addFilter(_NotPrintedYet())
        # Dagster's daemon loggers set their own level (INFO): the handler keeps to the configured one.
        handler.setLevel(level if isinstance(level, int) else logging.WARNING)


def with_faults(settings: SoakSettings, seed: int) -> tuple[SoakSettings, tuple[str, ...]]:
    """`settings` with the period's fault schedule (tests/soak/faults.py); and the kinds it could not place."""
    from dataclasses import replace

    from lake.calendar import trading_days
    from tests.soak.faults import entry_sessions, fault_plan

    days = trading_days(settings.start, settings.end)
    plan = fault_plan(days, entry_sessions(days, settings.symbols, settings.strategy_params), settings.symbols, seed)
    limits = plan.limits()
    faulty = replace(
        settings,
        source_down=plan.source_down,
        broker_5xx=plan.broker_5xx,
        model_timeout=plan.model_timeout,
        killed=plan.killed,
        disk_full=plan.disk_full,
        reload_on=plan.reload_on,
        actions=plan.actions(),
        pipeline={**settings.pipeline, "limits": limits} if limits else settings.pipeline,
    )
    for kind, days_ in plan.days().items():
        if kind != "breaker" and days_:
            print(f"fault {kind}: {', '.join(str(d) for d in days_)}", flush=True)
    if plan.breaker_days:
        print(f"fault breaker: trades per day {limits['max_trades_per_day']}, expected to trip on the {len(plan.breaker_days)} entry sessions", flush=True)
    return faulty, plan.unplaced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period", choices=sorted(PERIODS), default="month")
    parser.add_argument("--start", type=date.fromisoformat)
    parser.add_argument("--end", type=date.fromisoformat)
    parser.add_argument("--symbols", default="AAPL,MSFT,NVDA")
    parser.add_argument("--no-lean", action="store_true", help="Dagster's storage as it is, an engine per call (to measure tests/soak/lean.py)")
    parser.add_argument("--work", type=Path, help="where the lake, ledger and Dagster home go (default: a temporary folder, removed)")
    parser.add_argument("--no-faults", action="store_true", help="the period without any fault (the fault schedule is on by default)")
    parser.add_argument("--seed", type=int, default=16, help="the fault schedule's seed (the same plan on any day)")
    parser.add_argument(
        "--storage-url", default="", help="the Dagster instance's storage on PostgreSQL (an empty database or schema); default: SQLite under the work folder"
    )
    args = parser.parse_args(argv)
    start, end = PERIODS[args.period]
    start, end = args.start or start, args.end or end
    if end < start:
        parser.error(f"--end {end} is before --start {start}")
    setup_logging()

    from tests.soak.checks import check_all
    from tests.soak.fault_report import fault_report, unexplained
    from tests.soak.harness import SoakSettings, run_soak

    # tmpfs when there is one: the instance's SQLite files are written on every event.
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = args.work or Path(tempfile.mkdtemp(prefix="quantlake-soak-", dir=scratch))
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    try:
        print(f"soak {start} .. {end}, {','.join(symbols)}, in {work}", flush=True)
        # The missed-sessions sensor on, as a deployment runs it: a session whose 1-minute bars failed is fetched again.
        settings = SoakSettings(start=start, end=end, work=work, symbols=symbols, sensors=("missed_sessions_sensor",), lean=not args.no_lean,
                                storage_url=args.storage_url)
        settings, unplaced = (settings, ()) if args.no_faults else with_faults(settings, args.seed)
        for kind in unplaced:
            print(f"fault {kind}: no session in the period it could hit: not injected", flush=True)
        result = run_soak(settings)
        stats, problems = check_all(result)
        faults = fault_report(result)
        problems = unexplained(problems, faults.explained) + faults.problems
        if (end - start).days >= 27 and not stats["orders"]:
            problems.append("no order in a month or more: the order and ledger checks proved nothing")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        print(f"{key:<{width}}  {value}")
    if len(result.cpu_by_week) > 1:  # a cost growing with the deployment's history shows week by week
        print("cpu_seconds_by_week ", " ".join(f"{monday:%m-%d}:{cpu:.0f}" for monday, cpu in sorted(result.cpu_by_week.items())))
    for line in faults.lines:
        print(f"FAULT {line}")
    for line in problems:
        print(f"PROBLEM {line}")
    print("soak OK" if not problems else f"soak FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
