"""scripts/mutate.py runs a module's mutants in forked children even when collecting its tests runs a
polars query (issue 18): such a query starts polars' thread pool, and a child forked from a process
that has one hangs on its first query. The worker imports only what starts no thread (the mutated
module among it, so it is still patched in place) and each child collects the test files itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RULE = "import polars as pl\n\n{at_import}\n\ndef positive(frame: pl.DataFrame) -> pl.DataFrame:\n    return frame.filter(pl.col('x') > 0)\n"
# A query at import (a group-by), as tests/lake/test_validation.py's `pl.lit(datetime(..., tzinfo=UTC))` is.
QUERY = "TOTAL = pl.DataFrame({'g': [1, 1, 2], 'x': [1.0, 2.0, 3.0]}).group_by('g').agg(pl.col('x').sum()).height"
TEST = (
    "import polars as pl\n\nfrom pkg.helper import ZERO\nfrom pkg.rule import positive\n\n{at_import}\n\n\n"
    "def test_positive() -> None:\n    assert positive(pl.DataFrame({{'x': [-1.0, ZERO, 2.0]}}))['x'].to_list() == [2.0]\n"
)
# The worker's part, in a fresh interpreter (it forks and imports into itself): polars imported, no query
# run (as the runner's preload), then `import_live`, then the mutant `> 0` -> `>= 0` patched in a fork
# and the unmutated tests in another.
DRIVER = """
import importlib.util, json, os, sys
from pathlib import Path
import polars
spec = importlib.util.spec_from_file_location("mutate_script", sys.argv[1])
mutate = importlib.util.module_from_spec(spec)
sys.modules["mutate_script"] = mutate
spec.loader.exec_module(mutate)
work = Path.cwd()
tests = ["tests/test_rule.py"]
live, note = mutate.import_live("pkg/rule.py", tests, work)
original = (work / "pkg/rule.py").read_text()
mutated = original.replace("> 0", ">= 0")
if live is not None:
    patches = mutate.code_patches(live, work / "pkg/rule.py", original, mutated)
    mutant = mutate.run_forked(tests, 30, work / "mutant.log", prepare=lambda: mutate._apply(patches))[0]
else:
    (work / "pkg/rule.py").write_text(mutated)
    mutant = mutate.run_forked(tests, 30, work / "mutant.log")[0]
    (work / "pkg/rule.py").write_text(original)
unmutated = mutate.run_forked(tests, 30, work / "unmutated.log")[0]
print(json.dumps({"live": live is not None, "note": note, "mutant": mutant, "unmutated": unmutated,
                  "runner": os.environ.get("MUTATE_RUNNER", "fork"), "helper_preloaded": "pkg.helper" in sys.modules,
                  "test_preloaded": any(n.endswith("test_rule") for n in sys.modules),
                  "heavy_preloaded": "pkg.heavy" in sys.modules}))
"""


def _worker(tmp_path: Path, rule_at_import: str, test_at_import: str) -> dict[str, object]:
    files = {
        "pkg/__init__.py": "",
        "pkg/helper.py": "ZERO = 0.0\n",
        "pkg/heavy.py": f"import polars as pl\n\n{QUERY}\n",
        "pkg/rule.py": RULE.format(at_import=rule_at_import),
        "tests/__init__.py": "",
        "tests/test_rule.py": TEST.format(at_import=test_at_import),
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in {"MUTATE_RUNNER", "POLARS_MAX_THREADS"}}
    env |= {"PYTHONPATH": str(tmp_path), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(ROOT / "scripts" / "mutate.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# The query in the test file itself, or in a project module the test file imports after the mutated one.
@pytest.mark.parametrize("at_import", [QUERY, "from pkg.heavy import TOTAL"], ids=["test_file", "helper_module"])
def test_tests_running_polars_at_import_still_get_forked_children_and_a_patched_module(tmp_path: Path, at_import: str) -> None:
    result = _worker(tmp_path, "", at_import)
    assert result["runner"] == "fork", "fell back to fresh interpreters"
    assert result["live"], "the mutated module is imported once and patched, not imported per mutant"
    assert result["helper_preloaded"] and not result["test_preloaded"], "the project modules in the worker, the test file in each child"
    assert not result["heavy_preloaded"], "a module whose import starts polars' pool stays out of the worker"
    assert "collecting the tests runs polars" in str(result["note"])
    # Neither child hangs (a hang is "timeout"): the patched mutant fails its test, the unmutated code passes.
    assert (result["mutant"], result["unmutated"]) == ("failed", "passed")


def test_a_module_running_polars_at_import_is_imported_by_each_forked_child(tmp_path: Path) -> None:
    result = _worker(tmp_path, QUERY, QUERY)
    assert result["runner"] == "fork" and not result["live"] and not result["helper_preloaded"] and not result["heavy_preloaded"]
    assert (result["mutant"], result["unmutated"]) == ("failed", "passed")


@pytest.mark.parametrize("at_import", ["", "ZERO_AGAIN = 0.0"])
def test_tests_that_run_no_polars_at_import_are_imported_whole_as_before(tmp_path: Path, at_import: str) -> None:
    result = _worker(tmp_path, "", at_import)
    assert result["runner"] == "fork" and result["live"] and result["test_preloaded"] and result["note"] == ""
    assert (result["mutant"], result["unmutated"]) == ("failed", "passed")
