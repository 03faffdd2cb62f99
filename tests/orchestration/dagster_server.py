"""Starts `dagster dev` on a loopback port over our workspace, and stops it with its children."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dagster_dev(home: Path, env: dict[str, str], log_path: Path, startup_timeout: float = 120.0) -> Iterator[str]:
    """Yields the base URL once the webserver answers; stops webserver, daemon and code server after."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
    bin_dir = Path(sys.executable).parent
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so SIGINT reaches the children too
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster dev exited with {proc.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dagster dev did not answer on {url} within {startup_timeout}s; see {log_path}")
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
