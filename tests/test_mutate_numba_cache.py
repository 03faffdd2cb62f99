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


# Per function (issue 18): a kernel module with a kernel reaching the mutated helper, an unrelated kernel
# beside it, and one calling another function of the mutated file; a file reaching the helper through a
# relative import, one through `module.attr`, and an array another file fills at import.
FUNCTION_FILES = {
    "pkg_a/__init__.py": "",
    "pkg_a/helper.py": "def bump(x):\n    return x + 1.0\n\n\ndef triple(x):\n    return x * 3.0\n",
    "pkg_b/__init__.py": "",
    "pkg_b/kernel.py": (
        "from numba import njit\n\nfrom pkg_a.helper import bump, triple\n\nbump_nb = njit(cache=True)(bump)\ntriple_nb = njit(cache=True)(triple)\n\n\n"
        "@njit(cache=True)\ndef kernel(x):\n    return bump_nb(x) * 2.0\n\n\n"
        "@njit(cache=True)\ndef plain(x):\n    return x - 1.0\n\n\n"
        "@njit(cache=True)\ndef uses_triple(x):\n    return triple_nb(x)\n"
    ),
    "pkg_b/other.py": "from numba import njit\n\nfrom .kernel import kernel\n\n\n@njit(cache=True)\ndef twice(x):\n    return kernel(x)\n",
    "pkg_c/__init__.py": "",
    "pkg_c/chain.py": (
        "from numba import njit\n\nfrom pkg_b import kernel as kmod\n\n\n@njit(cache=True)\ndef via_chain(x):\n    return kmod.kernel(x) + 0.5\n\n\n"
        "@njit(cache=True)\ndef via_plain(x):\n    return kmod.plain(x) + 0.5\n"
    ),
    "pkg_c/unrelated.py": "from numba import njit\n\n\n@njit(cache=True)\ndef alone(x):\n    return x - 1.0\n",
    "pkg_d/__init__.py": "",
    "pkg_d/levels.py": "import numpy as np\nfrom numba import njit\n\nLEVELS = np.zeros(1)\n\n\n@njit(cache=True)\ndef level(x):\n    return x + LEVELS[0]\n",
    "pkg_d/fill.py": "from pkg_a.helper import bump\nfrom pkg_d.levels import LEVELS\n\nLEVELS[0] = bump(1.0)\n",
}
FUNCTION_RUN = (
    "from pkg_b.kernel import plain, uses_triple\nfrom pkg_b.other import twice\nfrom pkg_c.chain import via_chain\n"
    "from pkg_c.chain import via_plain\nfrom pkg_c.unrelated import alone\n"
    "print('result', twice(1.0), plain(1.0), uses_triple(1.0), via_chain(1.0), alone(1.0), via_plain(1.0))\n"
)
STALE = {("pkg_b/kernel.py", "kernel"), ("pkg_b/other.py", "twice"), ("pkg_c/chain.py", "via_chain"), ("pkg_d/levels.py", "level")}
KEPT = {("pkg_b/kernel.py", "plain"), ("pkg_b/kernel.py", "uses_triple"), ("pkg_c/unrelated.py", "alone"), ("pkg_c/chain.py", "via_plain")}


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "project"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _cache_log(log: str) -> dict[str, str]:
    """function (module.qualname) -> "loaded" or "saved", from NUMBA_DEBUG_CACHE's data lines."""
    out: dict[str, str] = {}
    for line in log.splitlines():
        if "data loaded from" in line or "data saved to" in line:
            name = Path(line.split()[-1]).name.split("-", 1)[0]
            out.setdefault(name, "loaded" if "loaded" in line else "saved")
    return out


def test_per_function_a_helper_reached_from_another_module_runs_mutated_and_unrelated_kernels_stay_cached(
    mutate: ModuleType, tmp_path: Path
) -> None:
    root = _project(tmp_path, FUNCTION_FILES)
    shared = tmp_path / "shared"
    env = os.environ | {"NUMBA_CACHE_DIR": str(shared), "NUMBA_DEBUG_CACHE": "1", "PYTHONPATH": str(root)}
    baseline = subprocess.run([sys.executable, "-c", FUNCTION_RUN], cwd=root, env=env, capture_output=True, text=True, check=True)
    assert "result 4.0 0.0 3.0 4.5 0.0 0.5" in baseline.stdout  # (1 + 1) * 2, 1 - 1, 1 * 3, 4 + 0.5, 1 - 1, 0 + 0.5
    subprocess.run([sys.executable, "-c", "from pkg_d.levels import level\nimport pkg_d.fill\nprint(level(1.0))"], cwd=root, env=env, check=True)

    original = (root / "pkg_a/helper.py").read_text()
    mutated = original.replace("x + 1.0", "x + 2.0")
    (root / "pkg_a/helper.py").write_text(mutated)
    module = "pkg_a/helper.py"
    assert mutate.changed_nodes(module, original, mutated, root) == {(module, "bump")}
    functions = mutate.stale_functions(module, original, mutated, root)
    assert functions >= STALE and not KEPT & functions
    assert (module, "triple") not in functions  # the mutated file's other function: its own entry recompiles anyway

    fresh = tmp_path / "fresh"
    seeded, left_out = mutate.seed_numba_cache(shared, fresh, mutate.stale_modules(module, root), root, functions, module)
    kept = {p.name.split("-", 1)[0] for p in fresh.rglob("*.nbi")}
    assert kept == {"kernel.plain", "kernel.uses_triple", "unrelated.alone", "chain.via_plain"}, kept
    assert seeded == 8 and left_out > 0  # an index and one compiled overload each

    done = subprocess.run([sys.executable, "-c", FUNCTION_RUN], cwd=root, env=env | {"NUMBA_CACHE_DIR": str(fresh)}, capture_output=True, text=True, check=True)
    assert "result 6.0 0.0 3.0 6.5 0.0 0.5" in done.stdout  # the mutated helper ran, in kernel, twice and via_chain
    log = _cache_log(done.stdout)
    # The unrelated kernels were loaded, not recompiled; uses_triple kept the unmutated triple it embeds.
    assert {log[f] for f in ("kernel.plain", "kernel.uses_triple", "unrelated.alone", "chain.via_plain")} == {"loaded"}, log
    assert {log[f] for f in ("kernel.kernel", "other.twice", "chain.via_chain", "helper.bump")} == {"saved"}, log


def test_what_a_mutant_changes_is_placed_by_statement(mutate: ModuleType, tmp_path: Path) -> None:
    root = _project(tmp_path, FUNCTION_FILES | {"pkg_a/helper.py": "SCALE = 1.0\n\n\ndef bump(x):\n    return x + SCALE\n\n\ndef triple(x):\n    return x * 3.0\n"})
    module = "pkg_a/helper.py"
    original = (root / module).read_text()
    # A constant: every function reading it, and through them their users.
    functions = mutate.stale_functions(module, original, original.replace("SCALE = 1.0", "SCALE = 2.0"), root)
    assert STALE | {(module, "bump")} <= functions and not KEPT & functions
    # A statement added or removed cannot be placed: whole files.
    assert mutate.stale_functions(module, original, original + "\nEXTRA = 1\n", root) is None
    # numba's extension API registers by type, not by a name a caller reads: whole files.
    by_type = original.replace("def triple", "@overload(abs)\ndef triple")
    assert mutate.changed_nodes(module, by_type, by_type.replace("x * 3.0", "x * 4.0"), root) is None


def test_an_entries_mutant_leaves_the_kernels_that_cannot_reach_it_cached(mutate: ModuleType) -> None:
    module = "strategies/entries.py"
    source = (ROOT / module).read_text()
    capped = mutate.stale_functions(module, source, source.replace("return max(lots * step, 0.0)", "return max(lots * step, 1.0)"), ROOT)
    assert {("backtests/order_sim.py", "_decide_nb"), ("backtests/order_sim.py", "simulate_signals_nb")} <= capped
    # The cross-sectional kernel sizes its own entries (kernels.entry_shares_nb), no longer through _decide_nb.
    unreached = {("backtests/sweep_nb.py", "signals_sweep_nb"), ("backtests/kernels.py", "entry_amount_nb"), ("backtests/sweep_rank_nb.py", "rank_sweep_nb")}
    assert not unreached & capped
    sized = mutate.stale_functions(module, source, source.replace("MIN_SHARES = 1e-8", "MIN_SHARES = 1e-7"), ROOT)
    assert {("backtests/kernels.py", "entry_amount_nb"), ("backtests/sweep_nb.py", "signals_sweep_nb"), ("backtests/order_sim.py", "simulate_signals_nb"), ("backtests/sweep_rank_nb.py", "rank_sweep_nb")} <= sized
    assert ("backtests/sweep_nb.py", "bracket_step_nb") not in sized  # an import line binds each name to its own target
