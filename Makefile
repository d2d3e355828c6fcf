# The two commands of the README: `make demo` and `make test`. Both create or reuse
# the virtualenv in .venv and install featsync with every extra (all) and the test tools
# (dev); `pip install featsync` alone is the lean core (see "Installing" in the README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: demo test install clean validate dbt-compat browser ui feast-venv

$(BIN)/featsync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev]'
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

## Debian's chromium for the UI's browser tests (Playwright drives it; its own browser download
## cannot work offline). Installed when missing and we are root; otherwise those tests skip
## locally (and fail under CI=true).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "$(CHROMIUM) is missing: sudo apt-get install chromium (the browser tests need it)"; \
	  fi; \
	fi

## The demo's registry in a browser: http://127.0.0.1:8888/ui/ (after make demo).
ui: install
	$(BIN)/featsync ui

## The real Feast SDK, for tests/test_feast_sdk.py (Feast's client against `featsync serve`), in a
## virtualenv of its own: feast pins pyarrow, pandas, pydantic, fastapi and more, which clash with
## ours. 0.67 is the Feast version tested. Reused once installed; pip's cache keeps a reinstall quick.
FEAST_VENV ?= .venv-feast
FEAST_VERSION ?= 0.67.*

$(FEAST_VENV)/bin/feast:
	$(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/pip install --quiet 'feast[redis]==$(FEAST_VERSION)'
	@touch $@

feast-venv: $(FEAST_VENV)/bin/feast

## Lint, then the test suite (real DuckDB, Postgres and Redis; under CI=true missing services fail).
test: install browser feast-venv
	$(BIN)/ruff check sync tests bench
	$(BIN)/ruff format --check sync tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

## The demo data (shifted as in `make demo`) must pass every expectation suite; CI runs this
## after the tests and keeps the JUnit report in target/featsync/validate.xml.
validate: install
	$(DEMO_BUILD)
	$(BIN)/featsync validate --junit target/featsync/validate.xml

## The oldest dbt-core that package/dbt_project.yml's require-dbt-version admits (1.10): in a
## venv of its own, the example and tests/integration_project (featsync installed from package/)
## build on DuckDB with dbt-core 1.10, and every example model and test compiles to the same
## SQL as with the dbt-core 1.11 of .venv. Not part of `make test` (it installs a second dbt).
DBT_COMPAT_VENV ?= .venv-dbt1.10
DBT_COMPAT_OUT := target/dbt-compat

dbt-compat: install
	test -x $(DBT_COMPAT_VENV)/bin/dbt || { $(PYTHON) -m venv $(DBT_COMPAT_VENV) && \
		$(DBT_COMPAT_VENV)/bin/pip install --quiet 'dbt-core~=1.10.0' 'dbt-duckdb~=1.10.0'; }
	rm -rf $(DBT_COMPAT_OUT) && mkdir -p $(DBT_COMPAT_OUT)
	$(DBT_COMPAT_VENV)/bin/dbt --version
	FEATSYNC_DUCKDB_PATH=$(DBT_COMPAT_OUT)/featsync.duckdb $(DBT_COMPAT_VENV)/bin/dbt build --project-dir . --profiles-dir . \
		--target dev --target-path $(DBT_COMPAT_OUT)/build
	for dbt in $(DBT_COMPAT_VENV)/bin/dbt:dbt1.10 $(BIN)/dbt:dbt1.11; do \
		FEATSYNC_DUCKDB_PATH=$(DBT_COMPAT_OUT)/featsync.duckdb $${dbt%%:*} compile --project-dir . --profiles-dir . \
			--target dev --target-path $(DBT_COMPAT_OUT)/$${dbt##*:} --quiet || exit 1; \
	done
	diff -r $(DBT_COMPAT_OUT)/dbt1.10/compiled $(DBT_COMPAT_OUT)/dbt1.11/compiled
	cp -r tests/integration_project $(DBT_COMPAT_OUT)/consumer
	printf 'packages:\n  - local: $(CURDIR)/package\n' > $(DBT_COMPAT_OUT)/consumer/packages.yml
	cd $(DBT_COMPAT_OUT)/consumer && FEATSYNC_INTEGRATION_DUCKDB_PATH=consumer.duckdb \
		$(abspath $(DBT_COMPAT_VENV))/bin/dbt deps --project-dir . --profiles-dir . && \
		FEATSYNC_INTEGRATION_DUCKDB_PATH=consumer.duckdb $(abspath $(DBT_COMPAT_VENV))/bin/dbt build --project-dir . --profiles-dir .
	@echo "dbt-compat: dbt-core 1.10 builds the example and a consumer; the example's compiled SQL is identical to 1.11's"

clean:
	rm -rf target logs dbt_packages featsync.duckdb .featsync tests/integration_project/target tests/integration_project/dbt_packages
