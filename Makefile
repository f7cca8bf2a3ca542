# The README's commands. `make run` and `make test` set everything up on a fresh clone.
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
SAMPLE_ORDERS ?= 20000
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: setup run test lint dagster clean bench

MANIFEST := dbt_project/target/manifest.json
DBT_FILES := $(shell find dbt_project -type f -not -path '*/target/*' -not -path '*/logs/*' 2>/dev/null)

setup: $(VENV)/.synced $(MANIFEST)

$(VENV)/.synced: pyproject.toml uv.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) sync --frozen --inexact
	touch $@

# dagster-dbt reads the dbt manifest when the definitions load: write it whenever a dbt file changes.
$(MANIFEST): $(VENV)/.synced $(DBT_FILES)
	cd dbt_project && ../$(VENV)/bin/dbt parse --profiles-dir . --quiet

run: setup
	@if [ -z "$$(find data/raw -type f \( -name '*.json*' -o -name '*.ndjson*' -o -name '*.jsonl*' -o -name '*.csv*' \) 2>/dev/null | head -n 1)" ]; then \
		echo "data/raw is empty: generating $(SAMPLE_ORDERS) sample orders"; \
		$(VENV)/bin/loyalty generate --orders $(SAMPLE_ORDERS) --out data/raw; \
	fi
	$(VENV)/bin/loyalty run

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check pipelines tests

dagster: setup
	$(VENV)/bin/dagster dev -w workspace.yaml

# Per-stage wall time, peak RSS and rows/s on ORDERS generated orders, against DuckDB's floor (issue #6).
ORDERS ?= 1000000
bench: setup
	$(VENV)/bin/loyalty bench --orders $(ORDERS)

clean:
	rm -rf data/warehouse data/exports data/reports
