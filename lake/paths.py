"""Where the lake lives by default: `data/lake` in the repo.

The lake itself never reads the environment: orchestration's settings (QUANTLAKE_LAKE_DIR) choose
the root and pass it down. A lake on an S3-compatible object store is an `ObjectPath` root instead
(lake/filesystem.py: `lake_location("s3://bucket/prefix", endpoint=...)`).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_lake_root() -> Path:
    return REPO_ROOT / "data" / "lake"
