# The two commands of the README: `make demo` and `make test`. Both create or reuse
# the virtualenv in .venv and install featsync with its pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: demo test install clean validate

$(BIN)/featsync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/featsync

# The example data ends on 2024-04-29; the demo shifts it to end yesterday (UTC), so that
# feature TTLs have not run out when it is pushed. Tests build it unshifted.
SHIFT_DAYS := $(shell $(PYTHON) -c "import datetime as d; print((d.datetime.now(d.timezone.utc).date() - d.date(2024, 4, 30)).days)")

DEMO_BUILD := $(BIN)/dbt build --project-dir . --profiles-dir . --vars '{featsync_example_shift_days: $(SHIFT_DAYS)}'

## The main job on the embedded defaults: dbt build on DuckDB, the registry, the quality
## gate, a push to the embedded Redis, and one entity's online features.

demo: install
	$(DEMO_BUILD)
	$(BIN)/featsync list
	$(BIN)/featsync validate
	$(BIN)/featsync push --full-refresh
	$(BIN)/featsync get --service fraud_detection --entity user_id=u0137 --entity merchant_id=m0035 --request transaction_amount=500

## Lint, then the test suite (real DuckDB, Postgres and Redis; under CI=true missing services fail).
test: install
	$(BIN)/ruff check sync tests bench
	$(BIN)/ruff format --check sync tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

## The demo data (shifted as in `make demo`) must pass every expectation suite; CI runs this
## after the tests and keeps the JUnit report in target/featsync/validate.xml.
validate: install
	$(DEMO_BUILD)
	$(BIN)/featsync validate --junit target/featsync/validate.xml

clean:
	rm -rf target logs dbt_packages featsync.duckdb .featsync tests/integration_project/target tests/integration_project/dbt_packages
