# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make serve   serve the playground on 127.0.0.1:8000, data under ./data
#   make test    lint and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

serve: $(VENV)/.installed
	PLAYGROUND_DATA_DIR=$${PLAYGROUND_DATA_DIR:-./data} $(BIN)/python -m app --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python tests/browser_setup.py
	$(BIN)/pytest -n 2 --dist loadfile -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/library_train.py
	$(BIN)/python bench/run_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
