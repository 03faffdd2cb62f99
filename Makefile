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

# Mutation testing (cosmic-ray): `make mutate`, or `make mutate MODULES=backtests/metrics.py`,
# MUTATE_LIMIT=seconds per module (default 900). Reports in artifacts/mutation/. CI (scripts/test.sh) runs
# `scripts/mutate.py --changed $${MUTATE_BASE:-HEAD~1}`: only the modules a change touches, within MUTATE_BUDGET.
mutate: setup
	.venv/bin/python scripts/mutate.py $(MODULES)

# Dagster's own lines (webserver, daemon) follow QUANTLAKE_LOG_FORMAT/_LEVEL too (settings.dagster_log_args):
# one JSON object a line in JSON mode (not even `dagster dev`'s "use dg dev" warning in plain text).
# UI_ARGS: more `dagster dev` options, e.g. UI_ARGS="-p 3001".
ui: setup
	@export DAGSTER_HOME="$${DAGSTER_HOME:-$(CURDIR)/.dagster_home}" \
	  PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded$${PYTHONWARNINGS:+,$$PYTHONWARNINGS}" && \
	.venv/bin/python -m orchestration.home >/dev/null && \
	log_args="$$(.venv/bin/python -c 'from orchestration.settings import dagster_log_args, settings; print(*dagster_log_args(settings()))')" && \
	exec .venv/bin/dagster dev $$log_args $(UI_ARGS)

# The deployment left alone on a simulated clock (tests/soak/): the soak tests (a week, faults,
# PostgreSQL), then a month, Nov 2026 (`make soak SOAK_ARGS="--period quarter"`: or year, week,
# --start/--end). Exit 1 on any problem.
soak: setup
	QUANTLAKE_SOAK=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/soak
	.venv/bin/python scripts/soak.py $(SOAK_ARGS)
