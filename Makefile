# finstream — `make demo` runs the whole pipeline (data, then training) on real packaged data; `make test` the tests.
# The order of the steps lives in the Prefect flows (flows/); these targets call one flow each through the CLI.
# Both set up the virtual environment first (once; again only when pyproject.toml or constraints.txt change).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.finstream-installed
# pip prints a warning per package for this machine's extra local index folders; keep the output readable
QUIET_PIP := { grep -v '^WARNING: Location' || true; }
PYTEST_ARGS ?=

.PHONY: setup tools demo demo-data test test-unit lint format repro deploy clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (CPU torch first; a few minutes the first time)…"
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet torch==2.13.0 -c constraints.txt 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c constraints.txt 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip download --quiet --no-deps mlfinpy==0.1.2 -d $(VENV)/share/finstream/wheels 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip check
	@touch $@

# system tools the tests drive: promtool (Debian's prometheus package) checks and unit-tests the alert rules
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "promtool is missing: install Debian's prometheus package (sudo apt-get install prometheus)"; exit 1; fi; \
	  echo "installing Debian's prometheus package (promtool, for the alert-rule tests)…"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || { \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; }
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "chromium is missing: install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"; exit 1; fi; \
	  echo "installing Debian's chromium and chromium-driver (for the dashboard end-to-end test)…"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || { \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; }

demo: setup
	$(BIN)/finstream train --refresh-data

demo-data: setup
	$(BIN)/finstream pipeline

test: setup tools
	DO_NOT_TRACK=1 $(BIN)/pytest $(PYTEST_ARGS)

test-unit: setup
	DO_NOT_TRACK=1 $(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

repro: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# needs a Prefect server: PREFECT_API_URL=http://127.0.0.1:4200/api (start one with `prefect server start`)
deploy: setup
	$(BIN)/prefect work-pool create local --type process 2>/dev/null || true
	FINSTREAM_PROJECT_DIR=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all

clean:
	rm -rf .finstream
