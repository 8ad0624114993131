# insession developer tasks. `make help` lists them; CI runs `make test` via .ci/run.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
REDIS_URL ?= redis://127.0.0.1:6379/0
VENV ?= .venv
PYTEST_ARGS ?=

export REDIS_URL
export PIP_DISABLE_PIP_VERSION_CHECK := 1

VENV_STAMP := $(VENV)/.insession-installed
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

# Stdlib-only Redis probe (works before the venv exists and without redis-cli):
# exit 0 if $REDIS_URL answers PING (a NOAUTH reply also proves a server is there).
REDIS_PING = $(PYTHON) -c 'import os, socket, sys, urllib.parse as up; \
u = up.urlparse(os.environ["REDIS_URL"]); \
s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=1); \
s.sendall(b"PING\r\n"); r = s.recv(64); \
sys.exit(0 if r.startswith((b"+PONG", b"-NOAUTH")) else 1)' >/dev/null 2>&1
REDIS_HOST_PORT = $(PYTHON) -c 'import os, urllib.parse as up; \
u = up.urlparse(os.environ["REDIS_URL"]); print(u.hostname or "127.0.0.1", u.port or 6379)'

.PHONY: help venv redis test lint format demo broker clean distclean

help: ## List the targets
	@echo "usage: make TARGET [REDIS_URL=$(REDIS_URL)] [PYTHON=$(PYTHON)] [PYTEST_ARGS=...]"
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV_STAMP) ## Create .venv and install insession with dev extras (redone when pyproject.toml changes)

$(VENV_STAMP): pyproject.toml
	@if ! $(PYTHON) -m venv $(VENV); then \
		echo "venv creation failed (python3-venv missing?): installing it with apt-get"; \
		rm -rf $(VENV); \
		$(APT_INSTALL) python3-venv; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@touch $@

redis: ## Make sure Redis answers at REDIS_URL (installs and starts a local redis-server if needed)
	@if $(REDIS_PING); then echo "Redis is up at $(REDIS_URL)"; exit 0; fi; \
	read -r host port <<< "$$($(REDIS_HOST_PORT))"; \
	case "$$host" in \
		127.0.0.1|localhost) ;; \
		*) echo "Redis at $(REDIS_URL) is unreachable and not local: start it yourself" >&2; exit 1 ;; \
	esac; \
	if ! command -v redis-server >/dev/null; then \
		echo "redis-server not found: installing it with apt-get"; \
		$(APT_INSTALL) redis-server; \
	fi; \
	if ! $(REDIS_PING); then \
		echo "starting redis-server on 127.0.0.1:$$port (no persistence)"; \
		redis-server --daemonize yes --bind 127.0.0.1 --port "$$port" --save "" --appendonly no >/dev/null; \
	fi; \
	for _ in $$(seq 1 50); do \
		if $(REDIS_PING); then echo "Redis is up at $(REDIS_URL)"; exit 0; fi; \
		sleep 0.2; \
	done; \
	echo "Redis did not answer at $(REDIS_URL)" >&2; exit 1

test: venv redis ## Run the whole test suite (unit + integration on the embedded broker and Redis)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv ## ruff lint, ruff format check and import-layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: venv redis ## Run the end-to-end demo on the embedded broker
	$(VENV)/bin/insession demo

broker: venv ## Run the embedded Kafka-protocol broker (Tansu) on 127.0.0.1:9092 until Ctrl-C
	$(VENV)/bin/insession broker

clean: ## Remove caches and build artifacts (keeps .venv)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
