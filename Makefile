# Shortcuts; the scripts are the source of truth (README).
.PHONY: demo test up down lint bench
demo:
	scripts/demo.sh
test:
	scripts/test.sh
up:
	.venv/bin/rsm dev up
down:
	.venv/bin/rsm dev down
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/lint-imports
bench:
	.venv/bin/python -m bench.bench_lifecycles --n 200
