"""The local Dagster home: `$DAGSTER_HOME` (default `.dagster_home`) with our default instance config.

`python -m orchestration.home` prepares it (`make ui` does, before `dagster dev`); the `quantlake`
commands call `ensure_dagster_home()`. A dagster.yaml the user wrote is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from lake.paths import REPO_ROOT
from orchestration.settings import settings

DEFAULT_INSTANCE = Path(__file__).with_name("default_instance.yaml")
# What earlier versions wrote (telemetry off only): upgraded in place to the default config.
_GENERATED_BEFORE = ("", "telemetry:\n  enabled: false\n")


def ensure_dagster_home() -> Path:
    """Creates `$DAGSTER_HOME` with the default dagster.yaml unless it has one; returns the home."""
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)  # for Dagster itself, in this process and the ones it starts
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text().strip() in {s.strip() for s in _GENERATED_BEFORE}:
        tmp = config.with_suffix(".yaml.tmp")
        tmp.write_text(DEFAULT_INSTANCE.read_text())
        tmp.replace(config)  # atomic: a concurrent `dagster dev` never reads half a file
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # a default for great_expectations, not a setting we read
    return home


def dagster_home() -> Path:
    """`$DAGSTER_HOME` (read by the settings), else `.dagster_home` in the repo."""
    return settings(only=("DAGSTER_HOME",)).dagster_home or REPO_ROOT / ".dagster_home"


if __name__ == "__main__":
    print(ensure_dagster_home())
