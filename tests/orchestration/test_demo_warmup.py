"""The demo compiles its research kernels in a side process while it ingests: the steps after it
(backtest, sweep, decision cycle, paper session, through Dagster) then compile nothing themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from orchestration import demo_warmup

SYMBOLS = ["AAPL", "AMZN", "GOOGL"]
START = "2024-01-01"

# The demo's steps in a fresh process, with every numba compilation recorded (a kernel loaded from
# the cache is not one): what a user's demo runs after its ingest.
STEPS = f"""
import json
from numba.core import event

# The demo's ingest ran first, in the demo's own process: its features compiled the indicator kernels.
import os
from pathlib import Path
from lake.features import compute_features
from lake.store import read_bars
compute_features(read_bars(Path(os.environ["QUANTLAKE_LAKE_DIR"]), {SYMBOLS!r}, "1d"))

compiled = []

class Seen(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass

event.register("numba:compile", Seen())
import dagster as dg
from orchestration.definitions import defs
from orchestration.demo import DemoReport, _steps

report = DemoReport({SYMBOLS!r}, [], ["2024"])
with dg.instance_for_test() as instance:
    _steps(defs, instance, report, {START!r}, progress=False, say=lambda line: None)
print(json.dumps({{"compiled": compiled, "failed": {{n: s.error.message for n, s in report.steps.items() if s.error}}}}))
"""


def _env(tmp_path: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        QUANTLAKE_LAKE_DIR=str(tmp_path / "lake"),
        QUANTLAKE_LEDGER_PATH=str(tmp_path / "ledger.sqlite"),
        QUANTLAKE_MODE="validation",
        NUMBA_CACHE_DIR=str(cache),
        DAGSTER_HOME=str(tmp_path / "home"),
    )
    return env


def _run_steps(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_after_the_warm_up_the_demo_steps_compile_no_kernel(tmp_path: Path) -> None:
    from orchestration.definitions import defs
    from orchestration.demo import warm_up_job

    bars = SyntheticSource().fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    replace_partitions(tmp_path / "lake", "bars", "1d", bars, period="year")
    (tmp_path / "home").mkdir()
    env = _env(tmp_path, tmp_path / "numba")
    job = warm_up_job(defs, SYMBOLS, START)
    assert job is not None
    assert demo_warmup.start(job, env).wait(timeout=900)
    assert any((tmp_path / "numba").rglob("*.nbi"))  # it compiled into the cache the steps read

    result = _run_steps(env)
    assert result == {"compiled": [], "failed": {}}


def test_a_warm_up_that_fails_tells_the_demo_and_raises_nothing() -> None:
    warming = demo_warmup.start({"symbols": ["AAPL"]})  # no steps in it: the side process fails
    assert warming.wait(timeout=300) is False
    warming.stop()  # already over: a no-op


def test_the_warm_up_runs_only_with_a_core_to_spare() -> None:
    assert demo_warmup.spare_core(load=0.4, cores=2)
    assert not demo_warmup.spare_core(load=1.2, cores=2)  # the other core is busy: it would slow the ingest
    assert not demo_warmup.spare_core(load=0.0, cores=1)
