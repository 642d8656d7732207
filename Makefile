# streams: run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install streams with its dev tools

run: $(STAMP) ## Bring the whole pipeline up on the embedded stack (Ctrl-C stops it)
	$(BIN)/streams up

lint: $(STAMP) ## ruff (lint + format check) and mypy strict
	$(BIN)/ruff check streams tests bench
	$(BIN)/ruff format --check streams tests bench
	$(BIN)/mypy

fmt: $(STAMP) ## Apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix streams tests bench
	$(BIN)/ruff format streams tests bench

test: $(STAMP) lint promtool chromium ## Lint, then the suite against a real broker and PostgreSQL (not the slow or chaos tests)
	$(BIN)/python -m pytest -m "not slow" --ignore=tests/chaos $(PYTEST_ARGS)

test-slow: $(STAMP) image-tools ## The slow tests: load runs, kill -9 rounds, the wheel and the image (CI runs them)
	$(BIN)/python -m pytest -m slow --ignore=tests/chaos $(PYTEST_ARGS)

image-test: $(STAMP) image-tools ## Build the image and run `streams --help`, `db migrate` and a worker inside it
	$(BIN)/python -m pytest tests/ops/test_image.py -q $(PYTEST_ARGS)

ci: test test-slow chaos ## What CI runs (.ci/run): the suite, the slow tests, the chaos suite

chaos: $(STAMP) ## Chaos suite: outages, broker reset, kill -9 (short; STREAMS_SOAK=1 for 70 s and 5 min outages)
	$(BIN)/python -m pytest tests/chaos -q -s

promtool: ## Install prometheus + promtool (Debian package) for the ops tests, if missing
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

chromium: ## Install Chromium (Debian package) for the console's browser test, if missing
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    -o DPkg::Lock::Timeout=600 chromium; }

image-tools: ## Install buildah + debootstrap (Debian packages) for `make image`, if missing
	@command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    -o DPkg::Lock::Timeout=600 buildah debootstrap; }

image: $(STAMP) image-tools ## Build the OCI image streams:<version> with buildah (k8s/image/build.sh)
	PYTHON=$(BIN)/python k8s/image/build.sh

manifests: $(STAMP) ## Regenerate k8s/ files derived from the code (topics, workloads, rules, dashboards)
	$(BIN)/python -m streams.ops.k8s

bench-tools: $(STAMP) ## Install redis-server (Debian) and the bench extras (Celery, for bench_webhooks' alternative), if missing
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    -o DPkg::Lock::Timeout=600 redis-server; }
	@$(BIN)/python -c 'import celery, redis, requests' 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet -e '.[dev,bench]'

bench: $(STAMP) bench-tools ## Run every benchmark under bench/, then one summary table (figures, goals, load)
	@uptime; failed=0; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || failed=1; done; \
	  $(BIN)/python bench/summary.py; exit $$failed

dev-start: $(STAMP) ## Start the embedded broker + PostgreSQL in the background
	$(BIN)/streams dev start

dev-stop: $(STAMP) ## Stop them
	$(BIN)/streams dev stop

clean: ## Remove the venv and local data
	rm -rf $(VENV) .streams .mypy_cache .ruff_cache

.PHONY: help install run lint fmt test test-slow image-test ci chaos promtool chromium image-tools image manifests bench-tools bench dev-start dev-stop clean
