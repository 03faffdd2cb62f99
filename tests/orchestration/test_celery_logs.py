"""A Celery worker started as deploy/celery/workers.yaml says writes JSON lines only in JSON mode:
Celery's own lines (start, connection, tasks received and done, warnings, shutdown) included."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.orchestration import test_celery as celery_cluster
from tests.orchestration.dagster_server import ROOT

redis_db = celery_cluster.redis_db  # the fixture: a Redis database of this test's own


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _ping_task(broker: str) -> None:
    """One task through the broker into the worker's `dagster` queue, run by its pool process:
    Celery's built-in `celery.ping` (dagster-celery's app registers it)."""
    from dagster_celery.make_app import make_app

    app = make_app({"broker": broker, "backend": broker})
    try:
        assert app.send_task("celery.ping", queue="dagster").get(timeout=120) == "pong"
    finally:
        app.close()


def _wait_for(log_path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text():
        assert proc.poll() is None, f"worker exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the worker's log within {timeout:.0f} s"
        time.sleep(0.2)


def test_a_celery_worker_writes_only_json_lines_in_json_mode(redis_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k != "QUANTLAKE_CELERY_BACKEND"}
    env |= {
        "PATH": f"{celery_cluster.BIN}{os.pathsep}{env.get('PATH', '')}",  # dagster-celery runs `celery` from PATH
        "DAGSTER_HOME": str(home),
        "QUANTLAKE_EXECUTOR": "celery",
        "QUANTLAKE_CELERY_BROKER": redis_db,
        "QUANTLAKE_LOG_FORMAT": "json",
    }
    name = f"quantlake-logs-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(celery_cluster.BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "deploy/celery/workers.yaml",
             "-i", "orchestration.definitions", "-n", name, "-l", "INFO", "--", "--concurrency=1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        celery_cluster._ping(redis_db, [f"{name}@{os.uname().nodename}"], [proc], [log_path])
        _ping_task(redis_db)
        # The pool process logs the success after storing the result the client already has.
        _wait_for(log_path, "succeeded in", proc)
    finally:
        celery_cluster._stop(proc)  # SIGTERM: a warm shutdown

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    text = [line for line in lines if _json_object(line) is None]
    assert not text, "lines that are not JSON objects:\n" + "\n".join(text[:20])
    events = [obj for line in lines if (obj := _json_object(line)) is not None]
    by_logger = {(e.get("logger"), e.get("event", "").split("[")[0]) for e in events}
    assert ("quantlake.celery", "celery worker started") in by_logger  # the banner, as one line
    assert any(logger == "celery.apps.worker" and event.endswith("ready.") for logger, event in by_logger)
    assert ("celery.worker.strategy", "Task celery.ping") in by_logger  # received, in the main process
    assert ("celery.app.trace", "Task celery.ping") in by_logger  # succeeded, in the pool process
    assert ("quantlake.celery", "celery worker shutting down") in by_logger
    started = next(e for e in events if e.get("event") == "celery worker started")
    assert name in started["worker"] and "[queues]" in started["banner"]


def test_in_console_mode_celery_keeps_its_own_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is connected: a receiver of Celery's setup_logging would stop Celery configuring its own."""
    from celery import signals

    from orchestration.executors import json_logs_in_celery_workers

    hooks = (signals.celeryd_init, signals.setup_logging, signals.celeryd_after_setup, signals.worker_ready, signals.worker_shutting_down)
    before = [list(hook.receivers) for hook in hooks]
    monkeypatch.setenv("QUANTLAKE_LOG_FORMAT", "console")
    json_logs_in_celery_workers()
    assert [list(hook.receivers) for hook in hooks] == before


def test_whole_process_logging_writes_every_logger_once_as_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker's setup_logging hook does: a library's line (celery, kombu) is a JSON line too, and
    ours is written once (through the root), not once by our logger and again by the root."""
    import logging

    from orchestration.observability import configure_logging, get_logger, reset_logging

    monkeypatch.setenv("QUANTLAKE_LOG_FORMAT", "json")  # the worker's environment
    root_handlers = list(logging.getLogger().handlers)
    try:
        configure_logging(fmt="json", whole_process=True)
        logging.getLogger("kombu.connection").warning("lost the broker")
        get_logger("quantlake.cycle").info("decided")
        configure_logging()  # a run's resources in a pool process: the worker's choice stays
        get_logger("quantlake.cycle").info("decided again")
        logging.getLogger("celery.app.trace").info("Task succeeded")
    finally:
        reset_logging()
    lines = capsys.readouterr().err.splitlines()
    events = [_json_object(line) for line in lines]
    assert None not in events, lines
    assert [(e["logger"], e["event"]) for e in events if e] == [
        ("kombu.connection", "lost the broker"), ("quantlake.cycle", "decided"), ("quantlake.cycle", "decided again"),
        ("celery.app.trace", "Task succeeded")]
    assert logging.getLogger().handlers == root_handlers  # reset_logging gives the root back
