"""Dagster's own processes log as QUANTLAKE_LOG_FORMAT asks: `make ui` (dagster dev: its webserver and
daemon) and the Kubernetes deployment's code server and webserver."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestration.settings import dagster_log_args, settings

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"


def _dagster_commands() -> dict[str, tuple[click.Command, str | None]]:
    """Each Dagster command Quantlake starts, with the prefix its options' variables take (None: none)."""
    from dagster._cli.api import grpc_command
    from dagster._cli.dev import dev_command
    from dagster._daemon.cli import run_command
    from dagster_webserver.cli import cli as webserver

    return {"dagster dev": (dev_command, None), "dagster-daemon run": (run_command, None), "dagster-webserver": (webserver, "DAGSTER_WEBSERVER"), "dagster api grpc": (grpc_command, None)}


@pytest.mark.parametrize(
    ("environ", "args"),
    [
        ({}, []),
        ({"QUANTLAKE_LOG_FORMAT": "JSON"}, ["--log-format", "json"]),
        ({"QUANTLAKE_LOG_FORMAT": "json", "QUANTLAKE_LOG_LEVEL": "warn"}, ["--log-format", "json", "--log-level", "warning"]),
        ({"QUANTLAKE_LOG_LEVEL": "Debug"}, ["--log-level", "debug"]),
        ({"QUANTLAKE_LOG_LEVEL": "NOTSET"}, []),  # no Dagster level for it: Dagster's default
    ],
)
def test_the_log_settings_become_options_every_dagster_command_takes(environ: dict[str, str], args: list[str]) -> None:
    assert dagster_log_args(settings(environ)) == args
    for name, (command, _) in _dagster_commands().items():
        ctx = command.make_context(name, list(args), resilient_parsing=False)
        assert ctx.params["log_format"] == ("json" if "json" in args else "colored"), name


def test_the_kubernetes_code_server_and_webserver_log_json() -> None:
    values: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    grpc, _ = _dagster_commands()["dagster api grpc"]
    assert grpc.make_context("grpc", list(deployment["dagsterApiGrpcArgs"])).params["log_format"] == "json"
    webserver, prefix = _dagster_commands()["dagster-webserver"]
    env = {e["name"]: e["value"] for e in values["dagsterWebserver"]["env"]}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert webserver.make_context("dagster-webserver", [], auto_envvar_prefix=prefix).params["log_format"] == "json"
    # Our own lines and Dagster's event lines (the instance's JSON handler) everywhere our code runs.
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]
    blocks = {
        "code location": {e["name"]: e["value"] for e in deployment["env"]},
        "run pods": dict(v.split("=", 1) for v in launcher),
        "webserver": env,
        "daemon": {e["name"]: e["value"] for e in values["dagsterDaemon"]["env"]},
    }
    assert {name: block.get("QUANTLAKE_LOG_FORMAT") for name, block in blocks.items()} == dict.fromkeys(blocks, "json")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lines(stream: Any, into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _interrupt_dagster_dev(make: subprocess.Popen[str]) -> None:
    """SIGINT to `dagster dev` alone (make's child: the recipe execs it), as a process manager stops
    it: it stops its webserver and daemon itself, logging each step. (A terminal's Ctrl-C reaches
    those children directly too; the interrupted webserver then prints a plain traceback: Dagster's.)"""
    children = Path(f"/proc/{make.pid}/task/{make.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    if not pids:
        os.killpg(make.pid, signal.SIGINT)


@pytest.mark.slow
def test_make_ui_writes_only_json_lines_in_json_mode(tmp_path: Path) -> None:
    """`make ui` as a user runs it (without its setup step), in JSON mode, until both the webserver
    and the daemon have logged; then interrupted: every line it wrote, shutdown included, is JSON."""
    # As a user runs it, from a shell: not as a sub-make of `make test`, which prints its own
    # "make[1]: Entering directory" lines (CI runs the suite under make).
    outer_make = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
    env = {
        **{k: v for k, v in os.environ.items() if k not in outer_make},
        "DAGSTER_HOME": str(tmp_path / "home"), "QUANTLAKE_LOG_FORMAT": "json",
        "QUANTLAKE_LAKE_DIR": str(tmp_path / "lake"), "QUANTLAKE_LEDGER_PATH": str(tmp_path / "ledger.sqlite"),
    }
    ui = subprocess.Popen(
        ["make", "-o", "setup", "ui", f"UI_ARGS=-h 127.0.0.1 -p {_free_port()}"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(ui.stdout, lines), daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 480  # generous: loading the code location on a busy machine

    def loggers() -> set[str]:
        return {str(json.loads(s).get("logger", "")).split(".")[0] for s in seen if s.startswith("{")}

    try:
        while not {"dagster-webserver", "dagster"} <= loggers() or not any('"dagster.daemon' in s for s in seen):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
    finally:
        running = len(seen)  # the lines written while it ran; the rest are its shutdown's
        _interrupt_dagster_dev(ui)
        try:
            ui.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)  # the process group started above, and only it
            ui.wait()
    while (line := lines.get(timeout=30)) is not None:
        seen.append(line)
    assert any('"dagster-webserver"' in s for s in seen) and any('"dagster.daemon' in s for s in seen), "".join(seen)[-3000:]
    not_json = [line for line in seen[:running] if not _is_log_record(line)]
    assert not not_json, not_json[:10]
    # At shutdown, Dagster's child commands that the interrupt reaches may print click's "Aborted!" or,
    # caught starting a thread, Python's KeyboardInterrupt traceback (seen in CI): not log lines, and
    # not ours to format. Anything else written at shutdown must be JSON too.
    assert not _non_json_outside_interrupt_tracebacks(seen[running:]), seen[running:][:20]


def _is_log_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and {"event", "level"} <= set(record)


# What Dagster's child commands print when the interrupt reaches them: click's "Aborted!" after a blank line.
INTERRUPT_NOISE = {"", "Aborted!"}


def _non_json_outside_interrupt_tracebacks(lines: list[str]) -> list[str]:
    """Lines that are neither JSON log records, nor interrupt noise, nor part of a traceback (chained
    ones included) that ends in KeyboardInterrupt."""
    out: list[str] = []
    block: list[str] = []
    for line in lines:
        if not block and not line.startswith("Traceback (most recent call last):"):
            if not _is_log_record(line) and line.strip() not in INTERRUPT_NOISE:
                out.append(line)
            continue
        if block and _is_log_record(line):  # a traceback cut off by a log line: not an interrupt's
            out += block
            block = []
            continue
        block.append(line)
        if line.startswith("KeyboardInterrupt"):
            block = []
    return out + block
