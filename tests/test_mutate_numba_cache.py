"""scripts/mutate.py seeds each mutant's numba cache with the baseline's compiled entries, less those
that could embed the mutated code (issue 18): a mutant then recompiles only what it must, and a helper
compiled into a kernel of another file is never run stale from the cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A helper in one package, compiled into a kernel in another (numba checks only the kernel's own file),
# a function in a third file reaching it through a relative import, and an unrelated cached function.
FILES = {
    "pkg_a/__init__.py": "",
    "pkg_a/helper.py": "def bump(x):\n    return x + 1.0\n",
    "pkg_b/__init__.py": "",
    "pkg_b/kernel.py": (
        "from numba import njit\n\nfrom pkg_a.helper import bump\n\nbump_nb = njit(cache=True)(bump)\n\n\n"
        "@njit(cache=True)\ndef kernel(x):\n    return bump_nb(x) * 2.0\n"
    ),
    "pkg_b/other.py": "from numba import njit\n\nfrom .kernel import kernel\n\n\n@njit(cache=True)\ndef twice(x):\n    return kernel(x)\n",
    "pkg_c/__init__.py": "",
    "pkg_c/unrelated.py": "from numba import njit\n\n\n@njit(cache=True)\ndef alone(x):\n    return x - 1.0\n",
}
RUN = "from pkg_b.other import twice\nfrom pkg_c.unrelated import alone\nprint('result', twice(1.0), alone(1.0), alone({arg}))\n"


@pytest.fixture(scope="module")
def mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_script", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_script"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _run(root: Path, cache: Path, arg: str = "1.0") -> tuple[str, str]:
    """(the printed results, numba's cache log) of the kernels run in a fresh interpreter on `cache`."""
    env = os.environ | {"NUMBA_CACHE_DIR": str(cache), "NUMBA_DEBUG_CACHE": "1", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", RUN.format(arg=arg)], cwd=root, env=env, capture_output=True, text=True, check=True)
    result = next(line for line in done.stdout.splitlines() if line.startswith("result"))
    return result, done.stdout


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_mutated_helper_compiled_into_another_files_kernel_is_run_mutated(mutate: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "project"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    shared = tmp_path / "shared"
    assert _run(root, shared)[0] == "result 4.0 0.0 0.0"  # the baseline: (1 + 1) * 2

    (root / "pkg_a/helper.py").write_text("def bump(x):\n    return x + 2.0\n")  # the mutant
    stale_copy = tmp_path / "stale"
    shutil.copytree(shared, stale_copy)
    # The bug this guards against: the whole baseline cache runs the kernel as it was compiled.
    assert _run(root, stale_copy)[0] == "result 4.0 0.0 0.0"

    stale = mutate.stale_modules("pkg_a/helper.py", root)
    assert stale == {"pkg_a/helper.py", "pkg_b/kernel.py", "pkg_b/other.py"}  # other.py through `from .kernel`
    before = _snapshot(shared)
    fresh = tmp_path / "fresh"
    seeded, left_out = mutate.seed_numba_cache(shared, fresh, stale, root)
    assert seeded > 0 and left_out > 0
    assert {Path(p).name.split(".", 1)[0] for p in _snapshot(fresh)} == {"unrelated"}
    result, log = _run(root, fresh, arg="1")  # an int: `alone` compiles a new overload beside its cached one
    assert result == "result 6.0 0.0 0.0"  # the mutated helper ran: (1 + 2) * 2
    assert "data loaded from" in log and "unrelated.alone" in log.split("data loaded from", 1)[1].splitlines()[0]
    # numba wrote the new overload beside the links by renaming a new file: the baseline's stay as they were.
    assert _snapshot(shared) == before


def test_the_projects_compiled_modules_are_left_out_with_their_importers(mutate: ModuleType) -> None:
    entries = mutate.stale_modules("strategies/entries.py", ROOT)
    assert {"backtests/kernels.py", "backtests/order_sim.py", "backtests/sweep_nb.py", "backtests/sweep_rank_nb.py"} <= entries
    sweep_nb = mutate.stale_modules("backtests/sweep_nb.py", ROOT)
    assert {"backtests/sweep_channel_nb.py", "backtests/sweep_fused_nb.py", "backtests/sweep_threshold_nb.py"} <= sweep_nb
    # What sweep_nb imports (kernels, entries) cannot embed it: their compiled entries are kept.
    assert not {"backtests/kernels.py", "strategies/entries.py", "backtests/order_sim.py"} & sweep_nb


def test_every_mapped_module_compiled_into_another_files_kernel_gets_a_cache_of_its_own(mutate: ModuleType) -> None:
    """On the shared cache such a module's mutants would run unmutated inside the other file's kernels."""
    for module in mutate.MODULES:
        importers = mutate.stale_modules(module, ROOT) - {module}
        compiled = [f for f in importers if not f.startswith(("tests/", "benchmarks/")) and "njit" in (ROOT / f).read_text()]
        assert not compiled or module in mutate.FRESH_NUMBA_CACHE, (module, compiled)
