"""Every `quantlake` command in README.md's shell blocks works, as written and in order, right after
`make demo` on a fresh lake and instance: the README and the command line cannot drift apart.

The demo runs as a new user runs it (its own process, the whole default universe, offline); the
README's commands then run in process through `orchestration.cli.main`, one after the other, and
`decide_job` runs as the UI launches it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from orchestration.cli import main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
OWN_SETTINGS = re.compile(r"^(QUANTLAKE_|ALPACA_|OPENAI_|DAGSTER_)")


def readme_commands() -> list[list[str]]:
    """The README's shell lines that run the demo or a `quantlake` command, in order, comments cut."""
    commands: list[list[str]] = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["make", "demo"] or (words and Path(words[0]).name == "quantlake"):
                commands.append(words)
    return commands


def test_the_readme_names_the_demo_and_its_next_commands() -> None:
    commands = readme_commands()
    assert commands[0] == ["make", "demo"]
    firsts = {words[1] for words in commands[1:]}
    assert {"backtest", "research", "sweep", "decide", "kill-switch", "resume"} <= firsts


@pytest.mark.slow
def test_every_readme_command_works_right_after_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if OWN_SETTINGS.match(n)]:
        monkeypatch.delenv(name)  # offline, embedded defaults: no keys, no pipeline file, no mode
    settings = {
        "QUANTLAKE_LAKE_DIR": str(tmp_path / "lake"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "QUANTLAKE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        "QUANTLAKE_DATA_SOURCE": "synthetic",
        "GX_ANALYTICS_ENABLED": "false",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    [demo, *rest] = readme_commands()
    assert demo == ["make", "demo"]

    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "demo", "--no-progress"],
        cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=400, check=False,
    )
    demo_seconds = time.perf_counter() - began
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Telemetry" not in done.stdout + done.stderr  # the banner no longer lands in the demo's output
    summary = done.stdout[done.stdout.index("Summary") :]
    for part in ("Backtest", "total return", "Sweep", "best fast=", "Decisions", "Paper session", "drift:", "make ui", str(tmp_path / "lake")):
        assert part in summary, summary
    print(f"demo: {demo_seconds:.0f} s\n{summary}")

    for words in rest:
        capsys.readouterr()
        code = main(words[1:])
        out, err = capsys.readouterr()
        assert code == 0, f"{shlex.join(words)} -> exit {code}\n{out[-2000:]}\n{err[-2000:]}"
        assert "Traceback" not in err
        if words[1] == "sweep":
            assert "best parameters: fast=" in out

    # decide_job as the UI launches it (the job the schedules and sensors run): a fresh process loading
    # the code location, the launchpad's default config (the whole universe on daily bars).
    ui_run = (
        "import dagster as dg; from orchestration.definitions import defs; "
        "instance = dg.DagsterInstance.get(); "
        "result = defs.resolve_job_def('decide_job').execute_in_process(instance=instance, raise_on_error=False); "
        "raise SystemExit(0 if result.success else 1)"
    )
    done = subprocess.run([sys.executable, "-c", ui_run], cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    from assets.partitions import universe
    from lake.store import read_bars

    daily = read_bars(tmp_path / "lake", universe(), "1d")
    assert set(daily["symbol"].unique()) == set(universe())  # the whole universe, MSFT included
    with dg.DagsterInstance.get() as instance:
        for asset in ("bars_1d", "bars_1m", "backtest", "parameter_sweep", "decision_cycle", "paper_session"):
            assert instance.fetch_materializations(dg.AssetKey(asset), limit=1).records, asset
