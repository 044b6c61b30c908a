# The two commands of the README: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench-engine bench-indexer bench-pages bench-pages-postgres clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)
	mkdir -p $${CONSOLE_VAR_DIR:-var}

# devengine + sample workloads + indexer + daphne on http://127.0.0.1:8000; one Ctrl-C stops all.
run: setup
	$(BIN)/python -m console.devstack

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest
	# The tests of the console again, on a PostgreSQL cluster the test setup starts on 127.0.0.1.
	CONSOLE_TEST_DATABASE=postgres $(BIN)/python -m pytest tests/console tests/pages tests/browser

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-engine: setup
	$(BIN)/python bench/engine_throughput.py

bench-indexer: setup
	$(BIN)/python bench/indexer_sync.py

bench-pages: setup
	$(BIN)/python bench/list_query.py
	$(BIN)/python bench/detail_page.py

bench-pages-postgres: setup
	$(BIN)/python bench/list_query.py --database postgres
	$(BIN)/python bench/detail_page.py --database postgres

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
