"""`make soak`: the deployment left alone for a month, a quarter or a year on a simulated clock.

    .venv/bin/python scripts/soak.py [--period month|quarter|year | --start YYYY-MM-DD --end YYYY-MM-DD]
                                     [--symbols AAPL,MSFT,NVDA] [--work DIR]

Runs tests/soak/harness.py (the real Definitions, Dagster's own scheduler, sensor and run-queue
iterations at every tick the daemon would see, runs in process), then every check in
tests/soak/checks.py. Prints what it ran (sessions, ticks, runs, orders, ledger events), the time
per simulated day, and what is wrong; exit code 1 if anything is.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
    for handler in logging.root.handlers:
        handler.addFilter(_NotPrintedYet())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--period", choices=sorted(PERIODS), default="month")
    parser.add_argument("--start", type=date.fromisoformat)
    parser.add_argument("--end", type=date.fromisoformat)
    parser.add_argument("--symbols", default="AAPL,MSFT,NVDA")
    parser.add_argument("--no-lean", action="store_true", help="Dagster's storage as it is, an engine per call (to measure tests/soak/lean.py)")
    parser.add_argument("--work", type=Path, help="where the lake, ledger and Dagster home go (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    start, end = PERIODS[args.period]
    start, end = args.start or start, args.end or end
    if end < start:
        parser.error(f"--end {end} is before --start {start}")
    setup_logging()

    from tests.soak.checks import check_all
    from tests.soak.harness import SoakSettings, run_soak

    # tmpfs when there is one: the instance's SQLite files are written on every event.
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = args.work or Path(tempfile.mkdtemp(prefix="quantlake-soak-", dir=scratch))
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    try:
        print(f"soak {start} .. {end}, {','.join(symbols)}, in {work}", flush=True)
        # The missed-sessions sensor on, as a deployment runs it: a session whose 1-minute bars failed is fetched again.
        result = run_soak(SoakSettings(start=start, end=end, work=work, symbols=symbols, sensors=("missed_sessions_sensor",), lean=not args.no_lean))
        stats, problems = check_all(result)
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
    for line in problems:
        print(f"PROBLEM {line}")
    print("soak OK" if not problems else f"soak FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
