"""How long a run of each kind of job may take before run monitoring fails it (`dagster/max_runtime`).

A run whose process hangs without dying (a socket with no timeout, a deadlock) would stay STARTED
for ever: the daemon's run monitoring (on in orchestration/default_instance.yaml and
deploy/dagster.yaml) cancels it once it has run longer than its job's limit and marks it FAILURE,
which the run-failure alert sensor reports and run retries re-execute. Runs of a job without a tag
fall under the instance's `run_monitoring.max_runtime_seconds` (6 h). A launch may carry its own
`dagster/max_runtime` tag (seconds; "0" for no limit), e.g. a sweep known to take a day.
"""

from __future__ import annotations

MAX_RUNTIME_TAG = "dagster/max_runtime"

# Seconds. Normal runs take seconds to a few minutes here; each limit is several times the worst seen.
MAX_RUNTIME_SECONDS: dict[str, int] = {
    "ingest": 30 * 60,  # one partition's fetch, validation and write, step retries included
    "trading": 10 * 60,  # a decision cycle, the close's report, a kill switch: a hang must not last a session
    "simulation": 2 * 3600,  # a paper session over the lake's history
    "research": 12 * 3600,  # backtests and sweeps grow with the grid and the bars
    "maintenance": 3600,  # retention: runs, files, the ledger's archive and compaction
}


def max_runtime(kind: str) -> dict[str, str]:
    """The run tag that bounds a job of `kind` (a key of MAX_RUNTIME_SECONDS)."""
    return {MAX_RUNTIME_TAG: str(MAX_RUNTIME_SECONDS[kind])}
