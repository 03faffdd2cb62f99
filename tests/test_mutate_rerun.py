"""MUTATE_RERUN finds the survivors of a run whatever runner wrote them (scripts/mutate.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORK_DIFF = "--- lake/validation.py\n+++ lake/validation.py\n@@ -1 +1 @@\n-x = a.shift(1)\n+x = a.shift(0)"
# cosmic-ray's own runner (the fresh-interpreter fallback) writes the same diff with a header and a/ b/ prefixes.
FALLBACK_DIFF = "--- mutation diff ---\n--- a/lake/validation.py\n+++ b/lake/validation.py\n@@ -1 +1 @@\n-x = a.shift(1)\n+x = a.shift(0)"


@pytest.fixture(scope="module")
def mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_script_rerun", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_script_rerun"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("written", [FORK_DIFF, FALLBACK_DIFF], ids=["fork_runner", "fresh_interpreters"])
def test_a_rerun_finds_the_last_runs_survivors(mutate: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str) -> None:
    monkeypatch.setattr(mutate, "OUT", tmp_path)
    report = "\n".join([
        "module: lake/validation.py",
        "score: 90.0% (9 killed of 10 run; 398 mutants after the operator filter)",
        "sha256: abc",
        "survivors (1):",
        f"\n--- line 1 (core/NumberReplacer #0)\n{written}",
    ])
    (tmp_path / "lake_validation.txt").write_text(report + "\n")
    killed, run, total, survivors = mutate.previous_survivors("lake/validation.py", "abc")
    assert (killed, run, total) == (9, 10, 398)
    assert survivors == {FORK_DIFF}  # the same mutant as the fork runner names it: a re-run matches it
    assert mutate.previous_survivors("lake/validation.py", "another source") is None
