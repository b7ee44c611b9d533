#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup-test-env.sh), then runs
# ruff, mypy and pytest. Extra arguments go to pytest, e.g. `scripts/test.sh -k render`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== pytest"
exec pytest "$@"
