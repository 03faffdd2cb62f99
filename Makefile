# The two commands of the README. Both set everything up first (idempotent, cached by a stamp).
.PHONY: setup demo test lint bench ui mutate soak

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/quantlake demo

test: setup
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check . && .venv/bin/mypy

bench: setup
	.venv/bin/python benchmarks/run_all.py

# Mutation testing (cosmic-ray; not in CI): `make mutate`, or `make mutate MODULES=backtests/metrics.py`,
# MUTATE_LIMIT=seconds per module (default 900). Reports in artifacts/mutation/.
mutate: setup
	.venv/bin/python scripts/mutate.py $(MODULES)

ui: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} bash -c '.venv/bin/python -m orchestration.home >/dev/null && .venv/bin/dagster dev'

# The deployment left alone on a simulated clock (tests/soak/): the soak tests (a week, faults,
# PostgreSQL), then a month, Nov 2026 (`make soak SOAK_ARGS="--period quarter"`: or year, week,
# --start/--end). Exit 1 on any problem.
soak: setup
	QUANTLAKE_SOAK=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/soak
	.venv/bin/python scripts/soak.py $(SOAK_ARGS)
