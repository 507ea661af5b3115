# Lakehouse — run `make` to list the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Started as root, the services run as an unprivileged user, who must be able to run
# the virtualenv's interpreter: use the system one (an interpreter under /root is not).
PYTHON ?= $(shell if [ "$$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else echo python3; fi)
VENV ?= .venv
BIN := $(VENV)/bin
LAKEHOUSE := $(BIN)/lakehouse
PYTEST_ARGS ?=

.PHONY: help
help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml edge_agent/pyproject.toml testing/pyproject.toml scripts/prerequisites.sh
	@PYTHON=$(PYTHON) bash scripts/prerequisites.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./edge_agent -e ./testing
	@touch $@

.PHONY: setup
setup: $(BIN)/.installed ## Install system prerequisites, the virtualenv and the package

.PHONY: up
up: setup ## Set up everything and start the lakehouse
	$(LAKEHOUSE) stack up

.PHONY: down
down: setup ## Stop the lakehouse (data kept)
	$(LAKEHOUSE) stack down

.PHONY: status
status: setup ## Show each service's state, health, pid and port (--wide: URLs)
	$(LAKEHOUSE) stack status

.PHONY: browser
browser: ## Install Debian's Chromium, which the dashboards' tests drive (none is downloaded)
	@PYTHON=$(PYTHON) bash scripts/prerequisites.sh --browser

.PHONY: containers
containers: ## Install podman, which runs the platform's image in the tests (no Docker engine needed)
	@PYTHON=$(PYTHON) bash scripts/prerequisites.sh --containers

.PHONY: test
test: setup browser containers ## Set up everything and pass the tests (on a stack of its own, started if needed)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: unit
unit: setup ## Run only the unit tests (no servers)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: docs
docs: setup ## Write docs/tables.md, the analysts' table reference, from the running lakehouse
	$(BIN)/python -m lakehouse.docs

.PHONY: deploy-facts
deploy-facts: setup ## Write what the chart and compose take from the settings, and the chart's values table
	$(BIN)/python -m lakehouse.deployment

.PHONY: lint
lint: setup ## Ruff (lint and format check), mypy --strict and the import layers (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: lock
lock: ## Write compose/constraints.txt, the versions the platform's image installs
	@PYTHON=$(PYTHON) bash scripts/lock-image.sh

.PHONY: fmt
fmt: setup ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

BENCHMARKS := stack_start ingest gateway edge_agent transform freshness reconcile outage \
	serving dashboards security

# Every benchmark runs, and their stack is stopped, even when one misses a target.
.PHONY: bench
bench: setup browser ## Run the benchmarks (prints ratios and absolute figures; fails if a target is missed)
	@failed=; for name in $(BENCHMARKS); do \
		echo "$(BIN)/python -m bench.$$name"; \
		$(BIN)/python -m bench.$$name || failed="$$failed $$name"; \
	done; \
	$(BIN)/python -m bench.down; \
	if [ -n "$$failed" ]; then echo "missed a target or failed:$$failed" >&2; exit 1; fi

.PHONY: soak
soak: setup ## The whole platform plus 1,000 readings/s for an hour (MINUTES=60)
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),60)

.PHONY: clean
clean: ## Stop the stack, delete its state and the virtualenv (the download cache is kept)
	-@test -x $(LAKEHOUSE) && $(LAKEHOUSE) stack down --purge
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
