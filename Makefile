# The two commands of the README. Both set everything up first (idempotent, cached by a stamp).
.PHONY: setup demo test lint bench ui

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

ui: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dagster_home} bash -c 'mkdir -p "$$DAGSTER_HOME" && touch "$$DAGSTER_HOME/dagster.yaml" && .venv/bin/dagster dev'
