# Async Testing Lab Kit. Two commands: `make lab` (learn) and `make test` (check everything).
.DEFAULT_GOAL := help
SHELL := /bin/bash

# The interpreter for .venv (tests/matrix.py --default, on PATH or under pyenv): Python 3.12,
# on which every check passes today, notebooks included; else 3.13, newer, then 3.11 from
# 3.11.8 on (3.11.0-3.11.7 can crash pytest: CPython's AST recursion-depth bug).
PYTHON ?= $(shell for p in python3 python3.12 python3.13 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p tests/matrix.py --default 2>/dev/null && break; done)
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
# The environment is stamped with the hash of what defines it: a second run installs nothing.
ENV_HASH := $(shell { cat requirements.lock pyproject.toml; echo "$(PY_VERSION)"; } 2>/dev/null \
	| sha256sum | cut -c1-16)
# mypy checks the library as each supported Python sees it (their standard libraries differ).
MYPY_VERSIONS := 3.11 3.12 3.13
STAMP := $(VENV)/.stamp-$(ENV_HASH)
LAB_PORT ?= 8888

.PHONY: help env lab test test-matrix adopter-trial lint typecheck unit notebooks stress bench \
	conformance build clean browser-deps postgres-deps sandbox-deps

help:
	@echo "make lab          create the environment and open JupyterLab on the lessons"
	@echo "make test         create the environment and run every test (lint, types, unit,"
	@echo "                  integration, conformance subset, notebooks, browser)"
	@echo "make test-matrix  library tests, notebooks and conformance on every Python 3.11+ here"
	@echo "make adopter-trial  the wheel, without the course extra, in someone else's suite"
	@echo "make stress       the slow stress tests"
	@echo "make bench        benchmarks (print figures and ratios)"
	@echo "make conformance  CPython's own asyncio test suite under the virtual loop"
	@echo "make build        regenerate learner and instructor notebooks from lessons/"
	@echo "make clean        remove the environment and generated caches"

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.11 or newer is needed (none found on PATH)."\
		" Install it, or run: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON) (Python $(PY_VERSION))"
	@test "$$($(BIN)/python -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)" \
		= "$(PY_VERSION)" || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*
	@touch $@
	@echo "==> environment ready ($(ENV_HASH))"

env: $(STAMP)

lab: $(STAMP)
	@$(BIN)/python -m labkit lab --port $(LAB_PORT)

lint: $(STAMP)
	$(BIN)/ruff check labkit tests bench
	$(BIN)/ruff format --check labkit

typecheck: $(STAMP)
	@for version in $(MYPY_VERSIONS); do echo "$(BIN)/mypy --python-version $$version"; \
		$(BIN)/mypy --python-version $$version || exit 1; done

test: $(STAMP) lint typecheck browser-deps postgres-deps sandbox-deps
	$(BIN)/python -m pytest -m "not stress" $(PYTEST_ARGS)

# The browser test drives Debian's Chromium; install it where the machine allows (root + apt).
browser-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null; \
	else \
		echo "note: no chromium here and no root apt-get; the browser test will be skipped" \
			"(install it with: sudo apt-get install chromium)"; \
	fi

# Lesson 12 and tests/integration/test_database.py start their own PostgreSQL servers from Debian's
# binaries (labkit.course.PostgresServer); install them where the machine allows (root + apt),
# without the system cluster Debian would otherwise create and start.
postgres-deps:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; \
	then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian's postgresql for lesson 12 and the database tests"; \
		mkdir -p /etc/postgresql-common/createcluster.d && \
		echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/labkit.conf && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
			>/dev/null; \
	else \
		echo "note: no PostgreSQL here and no root apt-get; lesson 12's database cells and tests" \
			"will be skipped (install it with: sudo apt-get install postgresql)"; \
	fi

# labkit grade runs each submission in Debian's bubblewrap; install it where root + apt allow.
sandbox-deps:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian's bubblewrap for the grading sandbox"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap \
			>/dev/null; \
	else \
		echo "note: no bwrap here and no root apt-get; the sandbox isolation tests will be" \
			"skipped (install it with: sudo apt-get install bubblewrap)"; \
	fi

# labkit's wheel, without the course extra, in a fresh environment beside someone else's suite.
adopter-trial:
	PYTHON=$(PYTHON) tests/adopter_trial/run.sh

# The same checks in .venv-3.X for each interpreter (tests/matrix.py); make test stays on one.
test-matrix:
	$(PYTHON) tests/matrix.py $(MATRIX_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# nbval over the generated lessons (also part of `make test`): instructor outputs exact, learner
# versions clean. One lesson: make notebooks PYTEST_ARGS="-k 04".
notebooks: $(STAMP)
	$(BIN)/python -m pytest tests/notebooks $(PYTEST_ARGS)

stress: $(STAMP) sandbox-deps
	$(BIN)/python -m pytest -m stress tests/stress $(PYTEST_ARGS)

# The competitors go to build/bench-deps, not into .venv: looptime registers pytest plugins that
# would patch every loop of the kit's own test suite. bench/_timing.py puts them on sys.path.
# bench/suites.py keeps its own sdists and environments in $(BENCH_DEPS)/real-suites (stamped).
BENCH_DEPS := build/bench-deps
BENCH_STAMP := $(BENCH_DEPS)/.stamp-$(shell sha256sum bench/requirements.txt 2>/dev/null | cut -c1-16)

$(BENCH_STAMP): bench/requirements.txt
	find $(BENCH_DEPS) -mindepth 1 -maxdepth 1 ! -name real-suites -exec rm -rf {} + 2>/dev/null || true
	$(BIN)/python -m pip install --quiet --target $(BENCH_DEPS) -r bench/requirements.txt
	@touch $@

bench: $(STAMP) $(BENCH_STAMP) sandbox-deps
	$(BIN)/python bench/run.py

conformance: $(STAMP)
	$(BIN)/python -m tests.conformance.run

build: $(STAMP)
	$(BIN)/python -m labkit build

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
