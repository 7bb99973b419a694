#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs lint, types, layering and the whole test suite
# against real Postgres, Temporal and Docker. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
echo "== ruff, mypy, import-linter"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
echo "== pytest"
exec .venv/bin/pytest -p no:cacheprovider -q "$@"
