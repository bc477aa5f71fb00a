# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make serve   serve the playground on 127.0.0.1:8000, data under ./data
#   make test    lint and run the whole test suite
#   make test-fast  lint and run the tests that are neither slow nor in a browser (inner loop)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test test-fast lint bench clean

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

# The inner loop: no end-to-end or convergence tests (marked slow), no browser; `make test`
# and CI run everything.
test-fast: lint
	$(BIN)/pytest -n 2 --dist loadfile -q -m "not slow and not browser"

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/library_train.py
	$(BIN)/python bench/run_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
