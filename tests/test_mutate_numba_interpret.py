"""scripts/mutate.py runs a numba module's mutants interpreted first (NUMBA_DISABLE_JIT=1), and trusts
that only for a kill by a test's assertion (issue 18): every survivor and every other failure is run
compiled again, so no outcome is an artefact of interpretation; a module whose tests fail interpreted
runs compiled only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KERNELS = '''import numpy as np
from numba import njit


@njit(cache=True)  # pragma: no mutate
def total(x: np.ndarray) -> float:
    s = 0.0
    for v in x:
        s += v
    return s


@njit(cache=True)  # pragma: no mutate
def ratio(a: float, b: float) -> float:
    return a / b


@njit(cache=True)  # pragma: no mutate
def scaled(x: float) -> float:
    return x * 3.0
'''
TESTS = '''import numpy as np
import pytest
from numba.core import config

from pkg.kernels import ratio, scaled, total


def test_total() -> None:
    assert total(np.array([1.0, 2.0, 4.0])) == 7.0


def test_ratio_refuses_zero() -> None:
    with pytest.raises(ZeroDivisionError):  # compiled and interpreted alike; a mutant "did not raise": not an assertion
        ratio(1.0, 0.0)


def test_scaled_when_compiled() -> None:
    if not config.DISABLE_JIT:  # interpreted, this test sees nothing
        assert scaled(2.0) == 6.0
{extra}'''
DRIVER = """
import dataclasses, importlib.util, json, os, sys
from pathlib import Path
import numba, numpy, pytest
spec = importlib.util.spec_from_file_location("mutate_script", sys.argv[1])
mutate = importlib.util.module_from_spec(spec)
sys.modules["mutate_script"] = mutate
spec.loader.exec_module(mutate)
work = Path.cwd()
mutate.MODULES = {"pkg/kernels.py": ["tests/test_kernels.py"]}
mutate.FRESH_NUMBA_CACHE = {"pkg/kernels.py"}
mutate.EQUIVALENT = {("pkg/kernels.py", "return x * 3.0", "return x * 4.0")}  # recorded (wrongly, for the test)
out = mutate._run_module_here("pkg/kernels.py", work, 900)
print(json.dumps({"outcome": dataclasses.asdict(out), "progress": (work / "progress.log").read_text()}))
"""


def _run(tmp_path: Path, extra: str = "") -> tuple[dict[str, object], list[str]]:
    files = {"pkg/__init__.py": "", "pkg/kernels.py": KERNELS, "tests/__init__.py": "", "tests/test_kernels.py": TESTS.format(extra=extra)}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUTATE_", "NUMBA_"))}
    env |= {"PYTHONPATH": str(tmp_path), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(ROOT / "scripts" / "mutate.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["outcome"], result["progress"].splitlines()


def _lines(progress: list[str], function: str) -> list[str]:
    return [line for line in progress if f"({function})" in line]


def test_only_an_assertion_settles_a_mutant_interpreted_every_other_outcome_is_compiled(tmp_path: Path) -> None:
    out, progress = _run(tmp_path)
    assert "interpreted first" in str(out["note"])
    total_lines, ratio_lines, scaled_lines = (_lines(progress, f) for f in ("total", "ratio", "scaled"))
    assert total_lines and all(line.split()[1] == "killed" and line.endswith(" interpreted") for line in total_lines), (
        "a failed assertion interpreted settles the mutant: nothing compiled"
    )
    # `a / b` mutated does not raise: pytest's "DID NOT RAISE" is no assertion, so it is run compiled.
    assert ratio_lines and all("re-checked compiled" in line and line.split()[1] == "killed" for line in ratio_lines)
    # Surviving interpreted (the test looks only when compiled): killed compiled, so counted killed; but a
    # survivor recorded in EQUIVALENT is listed as it is recorded, not compiled again (as MUTATE_RERUN does).
    recorded = [line for line in scaled_lines if "recorded equivalent" in line]
    assert len(recorded) == 1 and recorded[0].split()[1] == "survived"
    survivors = out["survivors"]
    assert isinstance(survivors, list) and [s.split("\n")[-1] for s in survivors] == ["+    return x * 4.0"]
    scaled_lines = [line for line in scaled_lines if line not in recorded]
    assert scaled_lines and all("re-checked compiled" in line and line.split()[1] == "killed" for line in scaled_lines)
    assert f"{len(total_lines)} killed interpreted on an assertion, {len(ratio_lines) + len(scaled_lines)} re-checked compiled" in str(out["note"])


def test_a_module_whose_tests_fail_interpreted_runs_compiled_only(tmp_path: Path) -> None:
    out, progress = _run(tmp_path, "\n\ndef test_compiled() -> None:\n    assert not config.DISABLE_JIT\n")
    assert "interpreted baseline failed" in str(out["note"]) and "compiled only" in str(out["note"])
    assert progress and not any("interpreted" in line for line in progress)
    assert out["killed"] == out["run"] and out["survivors"] == []
