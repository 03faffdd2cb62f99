"""scripts/soak.py's own output: each log line once, whoever set up the logger it came through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the soak does: the script's logging set-up, then a run's (each run's resources call
# ensure_logging), then the harness's daemon logger, an alert and a library's warning.
PROGRAM = """
import logging, runpy, sys
sys.path.insert(0, {root!r})
soak = runpy.run_path({script!r}, run_name="soak_script")
soak["setup_logging"]()
from orchestration.observability import ensure_logging
ensure_logging()
logging.getLogger("quantlake.soak").info("a sensor evaluated")
logging.getLogger("quantlake.soak").warning("a schedule failed to evaluate")
logging.getLogger("quantlake.alerts").error("run failed: ingest_daily_job")
logging.getLogger("some.library").warning("a library's warning")
"""


def test_each_line_is_printed_once() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("QUANTLAKE_LOG_LEVEL", "QUANTLAKE_LOG_FORMAT")}
    program = PROGRAM.format(root=str(ROOT), script=str(ROOT / "scripts" / "soak.py"))
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=True)
    out = done.stdout + done.stderr
    for line in ("a schedule failed to evaluate", "run failed: ingest_daily_job", "a library's warning"):
        assert out.count(line) == 1, out
    assert "a sensor evaluated" not in out, out  # the daemon's routine lines: QUANTLAKE_LOG_LEVEL=INFO shows them
