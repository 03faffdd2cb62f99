"""numba's on-disk cache, keyed on every compiled source of the project.

numba notices an edit to a kernel's own file only, not to the compiled helpers it calls from other
files (`strategies/indicators.py`, `strategies/entries.py`, `backtests/kernels.py`): after such an edit
a stale kernel runs the old code, or crashes loading it (`NRT_adapt_ndarray_to_python 'descr' is
NULL`). So every process that enters through `orchestration` (the CLI, the code location, Dagster's
step processes, the tests) caches under a folder named by a hash of all of them, before any kernel
module is imported. An explicit NUMBA_CACHE_DIR is left alone (scripts/test.sh, benchmarks, mutation).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILED_SOURCES = ("strategies", "backtests")  # the packages whose functions numba compiles into kernels
KEPT = 3  # older keyed folders kept beside the current one (another checkout's process may still use one)


def sources_key(root: Path = ROOT) -> str:
    """16 hex digits of the hash of every compiled package's sources, in path order."""
    digest = hashlib.sha256()
    for package in COMPILED_SOURCES:
        for path in sorted((root / package).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_base(root: Path = ROOT) -> Path:
    """`.numba_cache/` in the checkout, or the user's cache folder where the install is read-only."""
    if os.access(root, os.W_OK):
        return root / ".numba_cache"
    return Path.home() / ".cache" / "quantlake" / "numba"


def key_kernel_cache(root: Path = ROOT) -> Path | None:
    """Points numba's cache at `<base>/<sources key>` unless NUMBA_CACHE_DIR is set; returns it."""
    if os.environ.get("NUMBA_CACHE_DIR"):  # chosen by the caller
        return None
    folder = cache_base(root) / sources_key(root)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)  # child processes (step workers, the demo's warm-up) share it
    numba = sys.modules.get("numba.core.config")
    if numba is not None:  # numba read the variable at its import: tell it too
        numba.CACHE_DIR = str(folder)  # type: ignore[attr-defined]
    _drop_old(folder)
    return folder


def _drop_old(current: Path) -> None:
    """Keyed folders beyond the newest KEPT go: each edit of a kernel's sources makes a new one."""
    others = sorted((p for p in current.parent.iterdir() if p.is_dir() and p != current), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEPT:]:
        shutil.rmtree(old, ignore_errors=True)
