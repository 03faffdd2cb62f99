"""Mutation testing of the core rules with cosmic-ray: does a test fail when a rule breaks?

    .venv/bin/python scripts/mutate.py                       # every module below
    .venv/bin/python scripts/mutate.py backtests/metrics.py  # one (or several)
    MUTATE_LIMIT=600 .venv/bin/python scripts/mutate.py ...  # seconds per module (default 900)

Each module is mutated with its own focused tests only (MODULES below), so a module takes
minutes. The mutants run in a scratch copy of the working tree (never in it: another process may be
importing the real files), one at a time, each mutant followed by `pytest -x` on the module's tests.
Mutants run in a pseudo-random order (a hash of each mutant): when a module's time limit stops it, the ones that
ran are a random sample and the report says how many of how many.

Operators: cosmic-ray's core set without the ones that only make noise (arithmetic swapped for bit
shifts, powers or modulo; `is` for `<`; variable inserters; removed decorators, where removing
`@njit` changes nothing but speed). Lines marked `# pragma: no mutate` are skipped.

Writes artifacts/mutation/<module>.txt (score, then every survivor's diff) and summary.md, and
prints the summary table. Not part of CI (`.ci/run`, `scripts/test.sh`): run it by hand or with
`make mutate`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "mutation"
SEED = 0

# module -> the tests that guard it (pytest arguments). Numba-compiled modules (brackets through the
# kernels, kernels, sweep_nb) need a fresh numba cache per mutant: numba's cache does not notice that
# a function compiled into a kernel changed in another file, and would run the unmutated code.
MODULES: dict[str, list[str]] = {
    "lake/validation.py": ["tests/lake/test_validation.py"],
    "backtests/metrics.py": ["tests/backtests/test_metrics.py"],
    # The rule in plain Python (the engine compiles this very function; its tests run it compiled).
    "strategies/brackets.py": ["tests/backtests/test_brackets.py", "-k", "bracket_step or mirror or missing_levels or touch"],
    "backtests/engine.py": ["tests/backtests/test_engine_costs.py", "tests/backtests/test_brackets.py", "tests/backtests/test_engine_parity.py"],
    "orchestration/observability.py": ["tests/orchestration/test_observability.py"],
    "orchestration/bulk.py": ["tests/orchestration/test_cli.py", "-k", "bulk"],
    "backtests/kernels.py": ["tests/backtests/test_brackets.py", "tests/backtests/test_engine_parity.py", "tests/backtests/test_entry_sizing.py"],
    "backtests/sweep_nb.py": ["tests/backtests/test_sweep.py"],
    # The engine's per-bar loop (signals, brackets, shared cash) and the entry rule it compiles.
    "backtests/order_sim.py": ["tests/backtests/test_shared_cash.py", "tests/backtests/test_brackets.py", "tests/backtests/test_engine_parity.py"],
    "strategies/entries.py": ["tests/backtests/test_entry_sizing.py", "tests/backtests/test_shared_cash.py"],
    "trading/risk.py": ["tests/trading/test_risk.py"],
    "trading/execution.py": ["tests/trading/test_execution.py"],
}
FRESH_NUMBA_CACHE = {"backtests/kernels.py", "backtests/sweep_nb.py", "backtests/order_sim.py", "strategies/entries.py"}

_ARITH = {"Add", "Sub", "Mul", "Div"}
_BITS = {"BitOr", "BitAnd"}
_ORDER = {"Eq", "NotEq", "Lt", "LtE", "Gt", "GtE"}
_KEPT_COMPARISONS = {  # boundary, negation and direction: what a wrong rule looks like
    ("Lt", "LtE"), ("LtE", "Lt"), ("Gt", "GtE"), ("GtE", "Gt"),
    ("Lt", "GtE"), ("GtE", "Lt"), ("LtE", "Gt"), ("Gt", "LtE"), ("Eq", "NotEq"), ("NotEq", "Eq"),
    ("Lt", "Gt"), ("Gt", "Lt"), ("LtE", "GtE"), ("GtE", "LtE"), ("Is", "IsNot"), ("IsNot", "Is"),
}
_ANNOTATION = re.compile(r"(:|->)\s*[\w.\[\], ]+\|\s*[\w.\[\]]+\s*(=|,|\)|:|#|$)")
_DROPPED = {"core/VariableInserter", "core/VariableReplacer", "core/RemoveDecorator"}


def _order_key(spec: object) -> str:
    m = spec  # a cosmic-ray MutationSpec
    text = f"{SEED}:{m.definition_name}:{m.operator_name}:{m.occurrence}"  # type: ignore[attr-defined]
    return hashlib.sha256(text.encode()).hexdigest()


def kept_operator(name: str) -> bool:
    if name in _DROPPED:
        return False
    if m := re.fullmatch(r"core/ReplaceBinaryOperator_(\w+?)_(\w+)", name):
        a, b = m.groups()
        return (a in _ARITH and b in _ARITH) or (a in _BITS and b in _BITS)
    if m := re.fullmatch(r"core/ReplaceComparisonOperator_(\w+?)_(\w+)", name):
        return m.groups() in _KEPT_COMPARISONS
    if m := re.fullmatch(r"core/ReplaceUnaryOperator_(\w+?)_(\w+)", name):
        return m.groups() in {("USub", "UAdd"), ("Delete", "USub"), ("Delete", "Not"), ("Invert", "Not"), ("Delete", "Invert")}
    return True


@dataclass
class Outcome:
    module: str
    total: int = 0
    run: int = 0
    killed: int = 0
    survivors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    baseline_s: float = 0.0
    elapsed_s: float = 0.0
    note: str = ""

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.run if self.run else float("nan")


def scratch_copy() -> Path:
    """The working tree's files (tracked and new, not ignored) copied to a scratch directory."""
    work = Path(tempfile.gettempdir()) / f"quantlake-mutate-{os.getuid()}"
    shutil.rmtree(work, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    return work


def test_command(tests: list[str]) -> str:
    import shlex

    # Plugins are not autoloaded (langsmith's and hypothesis' cost a second or two per mutant);
    # pytest-timeout is loaded by name because pyproject sets its `timeout`.
    return shlex.join([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "pytest_timeout", *tests])


def run_module(module: str, work: Path, limit_s: float) -> Outcome:
    from cosmic_ray.commands.init import init
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.testing import run_tests
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    out = Outcome(module)
    command = test_command(MODULES[module])
    numba_root = work / ".numba_cache"
    os.environ["NUMBA_CACHE_DIR"] = str(numba_root / "shared")
    started = time.monotonic()
    outcome, output = run_tests(command, 1800)
    out.baseline_s = time.monotonic() - started
    if outcome != TestOutcome.SURVIVED:
        out.note = "baseline tests fail: not mutated"
        out.errors.append(output[-3000:])
        return out
    timeout = 3 * out.baseline_s + 30

    db_path = work / f"{module.replace('/', '_')}.sqlite"
    with use_db(str(db_path), WorkDB.Mode.create) as db:
        init([Path(module)], db, {})
        lines = (work / module).read_text().splitlines()
        items = []
        for item in db.pending_work_items:
            spec = item.mutations[0]
            if not kept_operator(spec.operator_name):
                continue
            line = lines[spec.start_pos[0] - 1]
            if "pragma: no mutate" in line:
                continue
            if spec.operator_name.startswith("core/ReplaceBinaryOperator_BitOr") and _ANNOTATION.search(line):
                continue  # `X | None` in an annotation: a string under `from __future__ import annotations`
            items.append(item)
    # A pseudo-random order keyed by each mutant alone: a time-limited run is a random sample, and
    # the same mutant keeps its place when the module's other lines or the filter change.
    items.sort(key=lambda i: _order_key(i.mutations[0]))
    out.total = len(items)
    deadline = started + limit_s
    for item in items:
        if time.monotonic() > deadline:
            out.note = f"time limit {limit_s:.0f} s: a random sample of {out.run} of {out.total} mutants ran"
            break
        if module in FRESH_NUMBA_CACHE:
            os.environ["NUMBA_CACHE_DIR"] = str(numba_root / item.job_id)
        result = mutate_and_test(item.mutations, command, timeout)
        if module in FRESH_NUMBA_CACHE:
            shutil.rmtree(numba_root / item.job_id, ignore_errors=True)
        if result.worker_outcome == WorkerOutcome.NO_TEST:
            out.total -= 1
            continue
        out.run += 1
        spec = item.mutations[0]
        where = f"line {spec.start_pos[0]} ({spec.definition_name or 'module'}): {spec.operator_name}"
        if result.worker_outcome != WorkerOutcome.NORMAL:
            out.errors.append(f"{where}\n{(result.output or '')[-1500:]}")
            out.killed += 1  # the mutant could not run: counted as caught, listed under errors
        elif result.is_killed:
            out.killed += 1
        else:
            out.survivors.append(f"{where}\n{result.diff}")
        print(f"  {module}: {out.run}/{out.total} run, {len(out.survivors)} survived", end="\r", flush=True)
    out.elapsed_s = time.monotonic() - started
    print()
    return out


def write_report(out: Outcome) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    head = [
        f"module: {out.module}",
        f"tests: {' '.join(MODULES[out.module])}",
        f"score: {out.score:.1f}% ({out.killed} killed of {out.run} run; {out.total} mutants after the operator filter)",
        f"time: {out.elapsed_s:.0f} s (baseline test run {out.baseline_s:.1f} s)",
        *([f"note: {out.note}"] if out.note else []),
        "",
        f"survivors ({len(out.survivors)}):",
    ]
    body = [f"\n--- {s}" for s in out.survivors]
    errors = [f"\n--- error: {e}" for e in out.errors]
    (OUT / f"{out.module.replace('/', '_').removesuffix('.py')}.txt").write_text("\n".join([*head, *body, *errors]) + "\n")


def summary(outcomes: list[Outcome]) -> str:
    rows = ["| module | score | killed / run | mutants | survivors | time (s) | note |", "|---|---:|---:|---:|---:|---:|---|"]
    for o in outcomes:
        rows.append(f"| {o.module} | {o.score:.1f}% | {o.killed} / {o.run} | {o.total} | {len(o.survivors)} | {o.elapsed_s:.0f} | {o.note} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"no tests mapped for {', '.join(unknown)}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    limit = float(os.environ.get("MUTATE_LIMIT", "900"))
    work = scratch_copy()
    os.chdir(work)
    os.environ["PYTHONPATH"] = str(work)  # the copy, not the editable install of the real tree
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    outcomes = []
    for module in modules:
        print(f"{module}: {' '.join(MODULES[module])}")
        outcome = run_module(module, work, limit)
        write_report(outcome)
        outcomes.append(outcome)
    table = summary(outcomes)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text(table + "\n")
    print(table)
    print(f"survivors and their diffs: {OUT.relative_to(ROOT)}/<module>.txt")
    return 0 if all(not o.errors or o.run for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
