# The two commands of the README: `make demo` and `make test`. Both create or reuse
# the virtualenv in .venv and install featsync with its pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: demo test install build list clean

$(BIN)/featsync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/featsync

## The main job on the embedded defaults: the whole dbt build on DuckDB, then the registry.
demo: install
	$(BIN)/dbt build --project-dir . --profiles-dir .
	$(BIN)/featsync list

## Lint, then the test suite (real DuckDB, Postgres and Redis; under CI=true missing services fail).
test: install
	$(BIN)/ruff check sync tests bench
	$(BIN)/ruff format --check sync tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf target logs dbt_packages featsync.duckdb tests/integration_project/target tests/integration_project/dbt_packages
