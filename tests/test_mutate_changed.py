"""`scripts/mutate.py --changed REV` (CI's mutation mode): which modules a change touches, and when a
sampled score fails the run (issue 18); and what a MUTATE_RERUN finds."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_script", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_script"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _git(repo: Path, *args: str) -> str:
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def _write(repo: Path, rel: str, text: str) -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on branch main with three source files and a test file, committed."""
    _git(tmp_path, "init", "-q", "-b", "main")
    for rel in ("strategies/base.py", "strategies/live.py", "trading/risk.py", "tests/strategies/test_mutants_base.py", "README.md"):
        _write(tmp_path, rel, f"# {rel}\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_changed_files_are_those_since_the_merge_base_committed_or_not(mutate: ModuleType, repo: Path) -> None:
    _git(repo, "checkout", "-q", "-b", "feature")
    _write(repo, "strategies/live.py", "# changed and committed\n")
    _git(repo, "commit", "-q", "-am", "live")
    # main moves on after the branch: its changes are not the branch's
    _git(repo, "checkout", "-q", "main")
    _write(repo, "trading/risk.py", "# main's own change\n")
    _git(repo, "commit", "-q", "-am", "risk on main")
    _git(repo, "checkout", "-q", "feature")
    _write(repo, "README.md", "# changed, not committed\n")
    _write(repo, "strategies/new.py", "# new, untracked\n")
    assert mutate.changed_files("main", root=repo) == ["README.md", "strategies/live.py", "strategies/new.py"]
    assert mutate.changed_files("HEAD", root=repo) == ["README.md", "strategies/new.py"]


def test_a_base_that_does_not_resolve_is_none(mutate: ModuleType, repo: Path) -> None:
    assert mutate.changed_files("HEAD~5", root=repo) is None
    assert mutate.changed_files("no-such-branch", root=repo) is None


def test_touched_modules_are_those_whose_source_or_tests_changed(mutate: ModuleType) -> None:
    assert mutate.touched_modules(["README.md", "strategies/new.py", "scripts/test.sh"]) == []
    assert mutate.touched_modules(["trading/risk.py"]) == ["trading/risk.py"]
    # a module's mapped test file counts: a weakened test lets its mutants live
    touched = mutate.touched_modules(["tests/strategies/test_mutants_base.py", "strategies/brackets.py"])
    assert touched == [m for m in mutate.MODULES if m in {"strategies/brackets.py", "strategies/base.py"}]
    assert "strategies/base.py" in touched and "strategies/indicators.py" not in touched


def _outcome(mutate: ModuleType, module: str, run: int, killed: int, survivors: list[str]) -> object:
    return mutate.Outcome(module, total=run, run=run, killed=killed, survivors=survivors)


SURVIVOR = "line 3 (f): core/NumberReplacer\n--- a.py\n+++ a.py\n@@ -3 +3 @@\n-    x = 1.0\n+    x = 2.0"


def test_a_sample_below_the_floor_fails_and_recorded_equivalents_count_as_killed(mutate: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mutate, "EQUIVALENT", set())
    at_floor = _outcome(mutate, "trading/risk.py", 10, 9, [SURVIVOR])
    below = _outcome(mutate, "trading/risk.py", 10, 8, [SURVIVOR, SURVIVOR.replace("2.0", "3.0")])
    assert mutate.verdicts([at_floor])[0] is True
    ok, lines = mutate.verdicts([at_floor, below])
    assert ok is False and lines[1] == "trading/risk.py: 80.0% of 10 sampled mutants killed or equivalent; floor 90%: BELOW"
    # recorded by hand: the spacing need not be cosmic-ray's (`shift( 0)`)
    monkeypatch.setattr(mutate, "EQUIVALENT", {("trading/risk.py", "x=1.0", "x =  2.0")})
    assert mutate.verdicts([below])[0] is True  # 8 killed + 1 equivalent of 10
    assert mutate.verdicts([_outcome(mutate, "strategies/base.py", 10, 8, [SURVIVOR, SURVIVOR])])[0] is False  # another module's
    monkeypatch.setattr(mutate, "FLOORS", {"trading/risk.py": 95.0})
    assert mutate.verdicts([_outcome(mutate, "trading/risk.py", 10, 9, [SURVIVOR.replace("2.0", "3.0")])])[0] is False


def test_too_small_a_sample_is_reported_not_judged(mutate: ModuleType) -> None:
    ok, lines = mutate.verdicts([_outcome(mutate, "trading/risk.py", mutate.MIN_JUDGED - 1, 0, [SURVIVOR] * (mutate.MIN_JUDGED - 1))])
    assert ok is True and "not judged" in lines[0]
    assert mutate.verdicts([_outcome(mutate, "trading/risk.py", mutate.MIN_JUDGED, 0, [SURVIVOR] * mutate.MIN_JUDGED)])[0] is False


def test_run_changed_mutates_the_touched_modules_within_the_budget(
    mutate: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[tuple[list[str], float | None]] = []
    scores = {"trading/risk.py": 10, "strategies/base.py": 10}

    def fake_mutate(modules: list[str], budget_s: float | None = None) -> list[object]:
        ran.append((modules, budget_s))
        return [_outcome(mutate, m, 10, scores[m], []) for m in modules]

    monkeypatch.setattr(mutate, "mutate", fake_mutate)
    monkeypatch.setattr(mutate, "changed_files", lambda base: ["README.md", "trading/risk.py", "strategies/base.py"])
    monkeypatch.setenv("MUTATE_BUDGET", "120")
    assert mutate.main(["--changed", "origin/main"]) == 0
    assert ran == [([m for m in mutate.MODULES if m in scores], 120.0)]
    scores["strategies/base.py"] = 8
    assert mutate.main(["--changed", "origin/main"]) == 1
    assert "strategies/base.py: 80.0% of 10 sampled mutants killed or equivalent; floor 90%: BELOW" in capsys.readouterr().out


def test_run_changed_without_a_base_or_a_touched_module_mutates_nothing(
    mutate: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_run(modules: list[str], budget_s: float | None = None) -> list[object]:
        raise AssertionError(f"mutated {modules}")

    monkeypatch.setattr(mutate, "mutate", must_not_run)
    monkeypatch.delenv("MUTATE_BASE", raising=False)
    assert mutate.main(["--changed"]) == 0
    assert "no base to compare with" in capsys.readouterr().out
    monkeypatch.setattr(mutate, "changed_files", lambda base: None)
    monkeypatch.setenv("MUTATE_BASE", "HEAD~1")
    assert mutate.main(["--changed"]) == 0
    assert "base 'HEAD~1' does not resolve" in capsys.readouterr().out
    monkeypatch.setattr(mutate, "changed_files", lambda base: ["README.md"])
    assert mutate.main(["--changed", "HEAD~1"]) == 0
    assert "nothing mutated" in capsys.readouterr().out
    assert mutate.main(["--changed", "a", "b"]) == 2


A, B, C = "strategies/sizing.py", "strategies/positions.py", "strategies/registry.py"


def test_each_module_gets_an_equal_share_of_what_is_left_of_the_budget(
    mutate: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    now = [1000.0]
    limits: list[float] = []

    def fake_run_module(module: str, work: Path, limit_s: float) -> object:
        limits.append(limit_s)
        now[0] += {A: 10.0, B: 70.0, C: 0.0}[module]  # A ends early, B overruns its share
        return mutate.Outcome(module)

    def fake_scratch_copy() -> Path:
        (tmp_path / "work").mkdir(exist_ok=True)  # mutate() removes it when done
        return tmp_path / "work"

    monkeypatch.setattr(mutate, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(mutate, "scratch_copy", fake_scratch_copy)
    monkeypatch.setattr(mutate, "preload", lambda: None)
    monkeypatch.setattr(mutate, "run_module", fake_run_module)
    monkeypatch.setattr(mutate, "write_report", lambda out: None)
    monkeypatch.setattr(mutate, "ROOT", tmp_path)
    monkeypatch.setattr(mutate, "OUT", tmp_path / "out")
    for name in ("PYTHONPATH", "GX_ANALYTICS_ENABLED", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTHONDONTWRITEBYTECODE"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    monkeypatch.chdir(tmp_path)
    mutate.mutate([A, B, C], 120.0)
    assert limits == [40.0, 55.0, 40.0]  # 120 / 3; then (120 - 10) / 2; then the 40 s B left
    limits.clear()
    monkeypatch.setenv("MUTATE_LIMIT", "7")
    mutate.mutate([A, C])
    assert limits == [7.0, 7.0]  # without a budget: MUTATE_LIMIT each


# MUTATE_RERUN finds the survivors of a run whatever runner wrote them.
FORK_DIFF = "--- lake/validation.py\n+++ lake/validation.py\n@@ -1 +1 @@\n-x = a.shift(1)\n+x = a.shift(0)"
# cosmic-ray's own runner (the fresh-interpreter fallback) writes the same diff with a header and a/ b/ prefixes.
FALLBACK_DIFF = "--- mutation diff ---\n--- a/lake/validation.py\n+++ b/lake/validation.py\n@@ -1 +1 @@\n-x = a.shift(1)\n+x = a.shift(0)"


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


def test_numba_compile_flags_are_not_mutated_but_every_other_literal_is(mutate: ModuleType, tmp_path: Path) -> None:
    """Flipping `cache=`/`parallel=`/`nogil=` changes speed, never a value: such mutants are noise and
    not run (as a removed `@njit`); `fastmath=` may change digits and a plain `True` is a rule: kept."""
    from cosmic_ray.commands.init import init
    from cosmic_ray.work_db import WorkDB, use_db

    source = (
        "from numba import njit\n"
        "\n"
        "\n"
        "@njit(cache=True, parallel=True, nogil=False)\n"
        "def f(x):\n"
        "    return x > 0 or True\n"
        "\n"
        "\n"
        "g = njit(cache=True)(f)\n"
        "h = njit(fastmath=True)(f)\n"
        "strict = False\n"
    )
    module = tmp_path / "kernels_probe.py"
    module.write_text(source)
    lines = source.splitlines()
    with use_db(str(tmp_path / "probe.sqlite"), WorkDB.Mode.create) as db:
        init([module], db, {})
        specs = [item.mutations[0] for item in db.pending_work_items]
    flags = [s for s in specs if s.operator_name in {"core/ReplaceTrueWithFalse", "core/ReplaceFalseWithTrue"}]
    kept_lines = sorted({s.start_pos[0] for s in flags if mutate.kept_mutant(s, lines)})
    dropped_lines = sorted({s.start_pos[0] for s in flags if not mutate.kept_mutant(s, lines)})
    assert dropped_lines == [4, 9]  # the decorator's three flags, the wrapper's cache flag
    assert kept_lines == [6, 10, 11]  # the rule's `True`, fastmath, a module constant
    assert sum(1 for s in flags if s.start_pos[0] == 4) == 3
    rule = [s for s in specs if s.start_pos[0] == 6 and mutate.kept_operator(s.operator_name)]
    assert len(rule) > 2 and all(mutate.kept_mutant(s, lines) for s in rule)  # its `>` and `or` mutants too
