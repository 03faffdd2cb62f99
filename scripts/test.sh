#!/usr/bin/env bash
# Sets up and runs the whole test suite: lint, types, then pytest (PostgreSQL and browser tests
# included; they skip with a reason only where the server or chromium cannot be had).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_system.sh || echo "warning: system packages (chromium) could not be installed; browser tests will skip"
export GX_ANALYTICS_ENABLED=false
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
