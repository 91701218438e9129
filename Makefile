# tessera-stac: every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# parallel pytest workers (pytest-xdist); files sharing an expensive fixture stay on one worker
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadgroup
DEMO_ARGS ?=
# Python keeps compiled bytecode in the venv and the source tree. An environment that sets
# PYTHONDONTWRITEBYTECODE (this machine's and CI's do) otherwise makes every process compile
# every module it imports from source: on a clean clone importing the API took 15.9 s
# instead of 6.0 s, and the test suite starts hundreds of such processes.
export PYTHONDONTWRITEBYTECODE =

.PHONY: help setup sysdeps test test-fast lint format typecheck bench demo clean node browser browser-deps

help:
	@echo "make demo   - set up, publish sample data, load pgSTAC and serve the API + STAC Browser"
	@echo "make test   - set up and run the test suite"
	@echo "make lint   - ruff (lint + format check) and mypy (strict)"
	@echo "make bench  - benchmarks (ratios against reference tools, written to bench/results/)"
	@echo "make browser - build STAC Browser into browser/dist (cached; served at /browser/)"

# System packages: PostgreSQL server + PostGIS (apt-get when missing and we may).
sysdeps:
	@bash scripts/ensure-sysdeps.sh

# uv installs the same pins as pip (same resolver inputs: PyPI plus the machine's wheel folder)
# in ~20 s where pip takes minutes on a clean clone; pip is the fallback when uv can't be had.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@bash scripts/install-python-deps.sh $(VENV)
	@touch $(STAMP)

setup: sysdeps $(STAMP)

# STAC Browser, built once from the pinned npm lock file (cached: a rebuild is a no-op).
node:
	@bash scripts/ensure-node.sh

browser: node
	@bash browser/build.sh

# The browser test drives Debian's Chromium (installed with apt-get when missing).
browser-deps: browser
	@bash scripts/ensure-browser-deps.sh

# STAC Browser's npm install + build (minutes on a clean clone) runs in the background beside
# `make setup` and pytest; the browser tests wait for it (browser/build.sh holds a lock).
test: node
	@mkdir -p test-artifacts
	@bash browser/build.sh > test-artifacts/browser-build.log 2>&1 &
	@$(MAKE) --no-print-directory setup
	@bash scripts/ensure-browser-deps.sh
	$(BIN)/pytest $(XDIST) --junitxml=test-artifacts/junit.xml $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

.typecheck: 
	@mkdir -p .typecheck/tessera_stac
	@for p in publisher catalog api schemas cli; do ln -sfn ../../$$p .typecheck/tessera_stac/$$p; done

lint: setup .typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p tessera_stac.catalog -p tessera_stac.publisher -p tessera_stac.api -p tessera_stac.cli

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(PY) -m bench

# STAC Browser's npm install + build starts first, in the background, beside `make setup`
# (pip) and the demo's first steps; the demo waits for it (browser/build.sh holds a lock) only
# before serving. A second run finds everything cached.
demo: node
	@mkdir -p demo-data
	@bash browser/build.sh > demo-data/browser-build-early.log 2>&1 &
	@$(MAKE) --no-print-directory setup
	$(BIN)/tessera-stac demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .mypy_cache .ruff_cache build *.egg-info \
		browser/dist browser/.build browser/node_modules test-artifacts
