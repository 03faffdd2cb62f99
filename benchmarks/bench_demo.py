"""The demo's time per stage, wall and CPU, as on a fresh clone: a new lake, Dagster home, ledger and
numba cache in a temporary directory (`--keep-cache DIR` reuses a numba cache: a second demo).

CPU is this process's (`time.process_time`) plus the numba warm-up's side process
(`orchestration.demo_warmup`), reported apart: on a shared machine the wall time measures the load,
the CPU time the demo. Prints one markdown table. Run:
`.venv/bin/python benchmarks/bench_demo.py [--no-warm-up] [--keep-cache DIR] [--symbols A,B]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warm-up", action="store_true", help="compile the kernels in the steps (the demo before the side process)")
    parser.add_argument("--keep-cache", help="numba cache directory to use and keep (default: a fresh one)")
    parser.add_argument("--symbols", help="comma-separated symbols (default: the universe)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    # Before anything imports numba or reads the settings.
    os.environ.update(
        DAGSTER_HOME=str(work / "home"), QUANTLAKE_LAKE_DIR=str(work / "lake"), QUANTLAKE_LEDGER_PATH=str(work / "ledger.sqlite"),
        NUMBA_CACHE_DIR=args.keep_cache or str(work / "numba"), GX_ANALYTICS_ENABLED="false", QUANTLAKE_MODE="validation",
    )
    began_wall, began_cpu = time.perf_counter(), time.process_time()
    marks: list[tuple[str, float, float]] = []

    def say(line: str) -> None:
        marks.append((line.strip()[:60], time.perf_counter() - began_wall, time.process_time() - began_cpu))

    from orchestration.home import ensure_dagster_home

    ensure_dagster_home()
    import dagster as dg

    from assets.partitions import universe
    from orchestration.definitions import defs
    from orchestration.demo import default_ranges, last_closed_session, run_demo

    say("setup: instance, ranges, warm-up start")
    days, years = default_ranges(last_closed_session())
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else universe()
    with dg.DagsterInstance.get() as instance:
        report = run_demo(defs, instance, symbols=symbols, days=days, years=years, progress=False, say=say, warm_up=not args.no_warm_up)
    say("end")
    print(f"demo on {len(symbols)} symbols, warm-up {'off' if args.no_warm_up else 'on'}, numba cache {'kept' if args.keep_cache else 'fresh'}"
          f"{'; FAILED: ' + '; '.join(report.failures[:3]) if report.failures else ''}\n")
    print("| stage (from its progress line) | wall s | CPU s |")
    print("|---|---:|---:|")
    previous = ("imports (dagster, the definitions)", 0.0, 0.0)
    for mark in marks:
        print(f"| {previous[0]} | {mark[1] - previous[1]:.1f} | {mark[2] - previous[2]:.1f} |")
        previous = mark
    print(f"| **total (this process)** | **{marks[-1][1]:.1f}** | **{marks[-1][2]:.1f}** |")
    print(f"| warm-up side process (CPU, on the other core) | | {_children_cpu():.1f} |")


if __name__ == "__main__":
    main()
