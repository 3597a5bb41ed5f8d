# One-command set-up: `make demo` and `make test` create .venv and install everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: demo test test-fast lint fuzz bench bench-spark loadtest screenshots lock clean

# Installs the versions pinned in requirements.lock, so every machine tests the same stack.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev,spark]'
	touch $(STAMP)

# Re-resolve the pinned versions in a throw-away environment (after changing pyproject.toml).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet -e '.[dev,spark]'
	{ echo "# Exact versions of every package make demo / make test install (pip install -c requirements.lock)."; \
	  echo "# Resolved on Python 3.11, Linux x86_64. Regenerate with: make lock (after changing pyproject.toml)."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > $(LOCK)
	rm -rf .lock-venv

demo: $(STAMP)
	$(BIN)/misdeclare demo

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check features models training serve tests bench docs
	$(BIN)/ruff format --check features models training serve tests bench docs
	$(BIN)/mypy

# Hostile generated files through score, triage load, drift and train (tests/fuzz): N files per command.
fuzz: $(STAMP)
	MISDECLARE_FUZZ_N=$(or $(N),1000) $(BIN)/pytest tests/fuzz -q -p no:cacheprovider

# Under two minutes on 2 cores: no model training, browser or fuzzing; fewer property examples; two workers.
test-fast: $(STAMP)
	MISDECLARE_TEST_FAST=1 $(BIN)/pytest -n 2 -m "not slow and not browser and not fuzz"

bench: $(STAMP)
	$(BIN)/python bench/bench_scoring.py
	$(BIN)/python bench/bench_pages.py

# Spark local[1] vs local[2] on the same ROWS lines (default 10M), each pinned to one CPU per task slot, and Spark vs the default engine (long: run it alone).
bench-spark: $(STAMP)
	$(BIN)/python bench/bench_spark.py --rows $(or $(ROWS),10000000)

# 50 users (48 inspectors, 2 API clients scoring 100 lines; think time 1-3 s) against misdeclare serve --workers 2 (2 scoring workers each) on loopback, on SQLite
# and PostgreSQL (DB=sqlite or DB=postgresql for one; a local PostgreSQL is started by .ci/postgres.sh when
# MISDECLARE_TEST_POSTGRES_URL is unset). Stops by itself: the demo, then about 2 minutes per database.
loadtest: $(STAMP)
	@databases="$(or $(DB),sqlite postgresql)"; \
	case "$$databases" in *postgresql*) [ -n "$$MISDECLARE_TEST_POSTGRES_URL" ] || eval "$$(bash .ci/postgres.sh)";; esac; \
	$(BIN)/python bench/loadtest.py --database $$databases --users $(or $(USERS),50) --seconds $(or $(SECONDS),60)

# README pictures: the demo's world through the triage pages in headless Chromium (a few minutes).
screenshots: $(STAMP)
	$(BIN)/python docs/screenshots.py --out docs/screenshots

clean:
	rm -rf demo mlruns mlflow.db misdeclare.db .pytest_cache
