#!/usr/bin/env bash
# Creates .venv and installs the project with pinned versions. Re-runs are cheap: a stamp file
# records the hash of what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.8
.venv/bin/uv pip install -q --python .venv/bin/python -c constraints.txt -e '.[dev,deploy]'
# Bytecode now, once: where PYTHONDONTWRITEBYTECODE is set (these machines, many CI images) every
# process would otherwise compile dagster, pandas and the rest from source at each start (measured:
# 15 s of CPU per demo process against 7 s), and the test suite starts hundreds of processes.
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages >/dev/null || echo "warning: some installed files did not compile to bytecode"
echo "$want" > "$stamp"
