#!/usr/bin/env bash
# Sets up and runs the whole test suite: lint, types, then pytest (PostgreSQL and browser tests
# included; they skip with a reason only where the server or chromium cannot be had), then the
# date-sensitive tests again under frozen clocks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_system.sh || echo "warning: system packages (chromium) could not be installed; browser tests will skip"
export GX_ANALYTICS_ENABLED=false
# numba's cache notices edits to a kernel's own file only, not to the compiled helpers it calls from
# other files (strategies/entries.py, backtests/kernels.py): key the cache on all their sources, so
# a stale kernel can never run, and drop the caches of older sources.
kernels=$(cat strategies/*.py backtests/*.py | sha256sum | cut -c1-16)
if [ -z "${NUMBA_CACHE_DIR:-}" ]; then
  mkdir -p .numba_cache
  find .numba_cache -mindepth 1 -maxdepth 1 ! -name "$kernels" -exec rm -rf {} +
  export NUMBA_CACHE_DIR="$PWD/.numba_cache/$kernels"
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"

# The same suite must pass on any day. Rerun what reads the clock or the calendar near today (the
# `date_sensitive` marker, see tests/conftest.py) with the clock frozen at instants that break
# naive date logic: a weekend, an exchange holiday, a half day before its 13:00 close, the spring
# DST switch, and two years after today. Skipped when arguments narrow the run (`make test ARGS`),
# or with QUANTLAKE_FROZEN_RERUNS=0.
if [ "$#" -eq 0 ] && [ "${QUANTLAKE_FROZEN_RERUNS:-1}" != 0 ]; then
  two_years_ahead=$(.venv/bin/python -c 'import datetime as d; t = d.date.today(); print(t.replace(year=t.year + 2, day=min(t.day, 28)).isoformat() + "T15:00:00+00:00")')
  for frozen in \
    2026-12-05T15:00:00+00:00 \
    2026-12-25T15:00:00+00:00 \
    2026-11-27T17:45:00+00:00 \
    2027-03-14T07:30:00+00:00 \
    "$two_years_ahead"; do
    echo "== date-sensitive tests with the clock frozen at $frozen"
    QUANTLAKE_FROZEN_NOW="$frozen" .venv/bin/python -m pytest -q -m date_sensitive -p no:cacheprovider
  done
fi

# The deployment left alone on a simulated clock (tests/soak/, out of the default run: minutes each):
# CI runs the week across Thanksgiving (restarts, half day) and the day of broker 503s; `make soak`
# runs them all and a month. Skipped when arguments narrow the run, or with QUANTLAKE_SOAK_IN_TESTS=0.
if [ "$#" -eq 0 ] && [ "${QUANTLAKE_SOAK_IN_TESTS:-1}" != 0 ]; then
  echo "== soak: a week unattended and a day of broker 503s"
  QUANTLAKE_SOAK=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/soak -k "week_unattended or broker_answering_503"
fi
