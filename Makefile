# StratusLab: `make demo` runs the main job, `make test` runs every check and test.
# Both set up what is missing first (scripts/setup.sh is idempotent), as root.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# The PostgreSQL role scripts/setup.sh makes; API tests run on it as well as on SQLite.
export STRATUS_TEST_POSTGRES_URL ?= postgresql+psycopg://stratus:stratus@127.0.0.1:5432/postgres

.PHONY: setup demo test check unit lxd bench clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

# The LXD tests in one process, one at a time, and meanwhile the others over two workers
# (scripts/test.sh says why). `make unit` (no LXD, no PostgreSQL) spreads over 3 workers.
test: setup check
	bash scripts/test.sh

check:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit:
	$(BIN)/pytest -n 3 --dist loadfile -m "not lxd and not postgres"

lxd:
	$(BIN)/pytest -m lxd

bench: setup
	$(BIN)/python bench/instance_run.py
	$(BIN)/python bench/deploy_webapp.py
	$(BIN)/python bench/param_propagation.py
	$(BIN)/python bench/tool_startup.py
	$(BIN)/python bench/control_plane.py --instances 10000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
