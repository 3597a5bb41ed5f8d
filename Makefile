# One-command set-up: `make demo` and `make test` create .venv and install everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint fuzz bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/misdeclare demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check features models training serve tests bench docs
	$(BIN)/ruff format --check features models training serve tests bench docs

# Hostile generated files through score, triage load, drift and train (tests/fuzz): N files per command.
fuzz: $(STAMP)
	MISDECLARE_FUZZ_N=$(or $(N),1000) $(BIN)/pytest tests/fuzz -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not browser"

bench: $(STAMP)
	$(BIN)/python bench/bench_scoring.py
	$(BIN)/python bench/bench_pages.py

# README pictures: the demo's world through the triage pages in headless Chromium (a few minutes).
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py --out docs/screenshots

clean:
	rm -rf demo mlruns mlflow.db misdeclare.db .pytest_cache
