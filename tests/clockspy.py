"""Which tests read "now" in a way that can change their result: a pytest plugin, to choose what the
frozen-clock reruns must cover (`DATE_SENSITIVE` and `CLOCK_FREE` in tests/conftest.py).

    QUANTLAKE_FROZEN_NOW=2026-12-05T15:00:00+00:00 CLOCKSPY_OUT=/tmp/clock_reads.json \
        .venv/bin/python -m pytest -p tests.clockspy -m date_sensitive --durations=0

Every clock read goes through time-machine's traveller while the clock is frozen; the spy counts, per
test, the reads made by project code (the audit stamp `Event.recorded_at` aside), by the exchange
calendar, and by Dagster's partition and schedule code (its "now" decides which partitions exist),
and ignores Dagster's run bookkeeping and other libraries' timestamps.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[1]) + "/"
VENV = sys.prefix + "/"
STDLIB = os.path.dirname(os.__file__) + "/"
CURRENT: list[str] = ["<collection>"]
READS: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
SEMANTIC_DAGSTER = ("dagster/_core/definitions/", "dagster/_core/scheduler", "dagster/_utils/schedules", "dagster/_core/storage/partition")
ALLOW = ("trading/events.py",)  # Event.recorded_at: the audit stamp, never a decision
TIME_LIBS = ("pandas/", "polars/", "dagster/_time", "dateutil", "pendulum")


def _classify() -> str | None:
    f = sys._getframe(2)
    while f is not None:  # past the standard library and time-machine: who asked
        fn = f.f_code.co_filename
        if "time_machine" in fn or fn.startswith(STDLIB) or fn.startswith("<"):
            f = f.f_back
            continue
        break
    if f is None:
        return None
    fn = f.f_code.co_filename
    if fn.startswith(ROOT) and not fn.startswith(VENV):
        rel = fn[len(ROOT):]
        if rel.startswith(ALLOW):
            return None
        return f"project:{rel}:{f.f_code.co_name}"
    if "exchange_calendars" in fn or "pandas_market_calendars" in fn:
        return f"calendar:{fn.split('site-packages/')[-1]}:{f.f_code.co_name}"
    if any(lib in fn for lib in TIME_LIBS):  # a library's "now": who asked it
        g = f.f_back
        while g is not None and (any(lib in g.f_code.co_filename for lib in TIME_LIBS) or g.f_code.co_filename.startswith(STDLIB)):
            g = g.f_back
        if g is None:
            return None
        gn = g.f_code.co_filename
        if gn.startswith(ROOT) and not gn.startswith(VENV):
            return f"project-via-lib:{gn[len(ROOT):]}:{g.f_code.co_name}"
        if any(s in gn for s in SEMANTIC_DAGSTER):
            return f"dagster:{gn.split('site-packages/')[-1]}:{g.f_code.co_name}"
        if "exchange_calendars" in gn:
            return f"calendar:{gn.split('site-packages/')[-1]}:{g.f_code.co_name}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    import time_machine

    original = time_machine.Traveller.time_ns

    def spy(self: object) -> int:
        try:
            what = _classify()
        except Exception:  # never break the run
            what = None
        if what:
            READS[CURRENT[0]][what] += 1
        return original(self)  # type: ignore[arg-type]

    time_machine.Traveller.time_ns = spy  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: object):  # type: ignore[no-untyped-def]
    CURRENT[0] = item.nodeid
    yield
    CURRENT[0] = "<between>"


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("CLOCKSPY_OUT", "clock_reads.json")
    with open(out, "w") as fh:
        json.dump({k: dict(v) for k, v in READS.items()}, fh, indent=1)
