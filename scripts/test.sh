#!/usr/bin/env bash
# Sets up and runs the whole test suite: lint (ruff), types (mypy), pytest (PostgreSQL and browser tests
# included; they skip with a reason only where the server or chromium cannot be had), beside the
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
if [ "$#" -gt 0 ]; then  # `make test ARGS`: just those tests
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/mypy

# Two streams, one per core: a pytest session runs on one core (its servers and workers aside), so
# the whole suite and the checks that must hold on any day run side by side:
# the first prints as it goes, the second's output follows when both are done; the script fails if
# any stage failed.
#
# The same suite must pass on any day: the tests that read the clock or the calendar near today (the
# `date_sensitive` marker, see tests/conftest.py) run again with the clock frozen at instants that
# break naive date logic: a weekend, an exchange holiday, a half day before its 13:00 close, the
# spring DST switch, and two years after today (QUANTLAKE_FROZEN_RERUNS=0 skips them). Then the
# deployment left alone on a simulated clock (tests/soak/, out of the default run: minutes each): the
# week across Thanksgiving (restarts, half day) and the day of broker 503s; `make soak` runs them
# all and a month (QUANTLAKE_SOAK_IN_TESTS=0 skips them).
two_years_ahead=$(.venv/bin/python -c 'import datetime as d; t = d.date.today(); print(t.replace(year=t.year + 2, day=min(t.day, 28)).isoformat() + "T15:00:00+00:00")')
frozen_rerun() {
  echo "== date-sensitive tests with the clock frozen at $1"
  QUANTLAKE_FROZEN_NOW="$1" .venv/bin/python -m pytest -q -m date_sensitive -p no:cacheprovider
}
reruns_on() { [ "${QUANTLAKE_FROZEN_RERUNS:-1}" != 0 ]; }
soak_on() { [ "${QUANTLAKE_SOAK_IN_TESTS:-1}" != 0 ]; }
# Each stream runs all its stages and reports how each ended (one failure does not hide another).
first_stream() {
  local failed=0
  echo "== the whole suite"
  .venv/bin/python -m pytest --durations=15 || failed=1
  if reruns_on; then frozen_rerun "$two_years_ahead" || failed=1; fi
  if soak_on; then
    echo "== soak: a week unattended and a day of broker 503s"
    QUANTLAKE_SOAK=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/soak -k "week_unattended or broker_answering_503" || failed=1
  fi
  return "$failed"
}
second_stream() {
  local failed=0
  if reruns_on; then
    for frozen in 2026-12-05T15:00:00+00:00 2026-12-25T15:00:00+00:00 2026-11-27T17:45:00+00:00 2027-03-14T07:30:00+00:00; do
      frozen_rerun "$frozen" || failed=1
    done
  fi
  # Mutation testing of the core modules the change touches (a sample within MUTATE_BUDGET, 300 s): fails when a
  # touched module's score falls below 90 % (QUANTLAKE_MUTATION_IN_TESTS=0 skips it; MUTATE_BASE names the base).
  if [ "${QUANTLAKE_MUTATION_IN_TESTS:-1}" != 0 ]; then
    echo "== mutation of the modules this change touches (base: ${MUTATE_BASE:-HEAD~1})"
    .venv/bin/python scripts/mutate.py --changed "${MUTATE_BASE:-HEAD~1}" || failed=1
  fi
  return "$failed"
}
log=$(mktemp)
second_stream >"$log" 2>&1 &
second=$!
first_stream &
first=$!
first_status=0
wait "$first" || first_status=$?
second_status=0
wait "$second" || second_status=$?
cat "$log"
rm -f "$log"
echo "== the suite, a frozen rerun and the soak: exit $first_status; the other frozen reruns: exit $second_status"
[ "$first_status" = 0 ] && [ "$second_status" = 0 ]
