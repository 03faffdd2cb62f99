"""Where the lake lives. Default: `data/lake` in the repo; override with QUANTLAKE_LAKE_DIR."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LAKE_DIR_ENV = "QUANTLAKE_LAKE_DIR"


def default_lake_root() -> Path:
    env = os.environ.get(LAKE_DIR_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data" / "lake"
