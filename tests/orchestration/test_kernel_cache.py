"""numba's cache is keyed on every compiled source, so an edit to a helper in another file never runs a
stale kernel (orchestration/kernel_cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration import kernel_cache
from orchestration.kernel_cache import key_kernel_cache, sources_key

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> Path:
    for package, name in (("strategies", "indicators.py"), ("backtests", "kernels.py"), ("trading", "risk.py")):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / name).write_text(f"# {package}\n")
    return root


def test_the_key_follows_every_compiled_source_and_only_those(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    key = sources_key(root)
    assert key == sources_key(root) and len(key) == 16
    (root / "trading" / "risk.py").write_text("# changed, but numba compiles nothing here\n")
    assert sources_key(root) == key
    (root / "backtests" / "kernels.py").write_text("# a helper another file's kernel compiles\n")
    edited = sources_key(root)
    assert edited != key
    (root / "strategies" / "new_helper.py").write_text("x = 1\n")
    assert sources_key(root) != edited


def test_the_cache_goes_to_the_keyed_folder_unless_numba_cache_dir_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "checkout")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    folder = key_kernel_cache(root)
    assert folder == root / ".numba_cache" / sources_key(root) and folder.is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(folder)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "chosen"))
    assert key_kernel_cache(root) is None
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "chosen")


def test_only_the_newest_older_folders_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    base = root / ".numba_cache"
    for i in range(6):
        old = base / f"old{i}"
        old.mkdir(parents=True)
        os.utime(old, (time.time() - 1000 + i, time.time() - 1000 + i))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    current = key_kernel_cache(root)
    assert current is not None
    left = sorted(p.name for p in base.iterdir())
    assert left == sorted([current.name] + [f"old{i}" for i in range(6 - kernel_cache.KEPT, 6)])


def test_a_process_entering_through_orchestration_compiles_into_the_keyed_folder() -> None:
    # The key must be set before the first kernel module is decorated: numba picks a function's cache
    # folder then, and importing the settings already imports kernels.
    code = (
        "import json, sys, orchestration\n"
        "from strategies import indicators\n"
        "import backtests.engine, backtests.sweep\n"
        "import numba\n"
        "from numba.core.registry import CPUDispatcher\n"
        "paths = {f'{m}.{n}': f._cache._cache_path for m, mod in list(sys.modules.items()) if m.startswith(('strategies', 'backtests'))\n"
        "         for n, f in vars(mod).items() if isinstance(f, CPUDispatcher) and hasattr(f._cache, '_cache_path')}\n"
        "from orchestration.kernel_cache import cache_base, sources_key\n"
        "print(json.dumps([numba.config.CACHE_DIR, paths, str(cache_base() / sources_key())]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    config_dir, kernels, keyed = json.loads(out.stdout.strip().splitlines()[-1])
    folder = Path(keyed)  # the key as that process saw the sources
    assert folder.parent == kernel_cache.cache_base(ROOT)
    assert config_dir == str(folder)
    assert "strategies.indicators.window_sums_nb" in kernels and len(kernels) > 10, sorted(kernels)
    elsewhere = {name: path for name, path in kernels.items() if not Path(path).is_relative_to(folder)}
    assert elsewhere == {}, elsewhere
