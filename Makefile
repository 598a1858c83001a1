# Two entry points on a fresh machine with python3 and make: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DATALAKE_BASE_PATH ?= $(CURDIR)/lake

.PHONY: install home browser services demo dev test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The instance settings (config/dagster.yaml: run queue, one run per partition, pools) in $(DAGSTER_HOME), copied
# when missing; an existing one that differs is left alone with a note (it may hold your own storage settings).
home:
	@mkdir -p "$(DAGSTER_HOME)"
	@if [ ! -f "$(DAGSTER_HOME)/dagster.yaml" ]; then cp config/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"; \
	elif ! cmp -s config/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"; then \
		echo "note: $(DAGSTER_HOME)/dagster.yaml differs from config/dagster.yaml; copy it over unless you changed it on purpose"; fi

# Debian packages $(1), as root or through sudo when it needs no password, with one `apt-get update` retry when the
# package lists are stale; fails (for the caller's message) when neither works.
apt_install = if [ "$$(id -u)" = 0 ]; then apt-get install -y $(1) || { apt-get update && apt-get install -y $(1); }; \
	elif sudo -n true 2>/dev/null; then sudo apt-get install -y $(1) || { sudo apt-get update && sudo apt-get install -y $(1); }; \
	else false; fi

# Headless Chromium for the gallery test (datalake_pipelines_tests/test_gallery.py): Debian's packages, installed
# only when missing and apt-get is there (as root, or through sudo when it needs no password); idempotent.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get: install chromium and its chromedriver yourself"; \
	elif ! { $(call apt_install,chromium chromium-driver); }; then \
		echo "chromium missing: run 'sudo apt-get install chromium chromium-driver' (the gallery test skips)"; fi
	@# a CJK font for labels drawn on thumbnails (1.6 MB; core/preview/fonts.py); DejaVu covers the rest
	@if [ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || ! command -v apt-get >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get install -y fonts-wqy-microhei || echo "fonts-wqy-microhei not installed"; \
	elif sudo -n true 2>/dev/null; then sudo apt-get install -y fonts-wqy-microhei || echo "fonts-wqy-microhei not installed"; \
	else echo "no CJK font: run 'sudo apt-get install fonts-wqy-microhei' (CJK labels are left out of thumbnails)"; fi

# PostgreSQL and Redis servers for the scale-out tests (datalake_pipelines_tests/support/services.py starts throwaway
# ones on 127.0.0.1): Debian's packages, installed only when missing and apt-get is there; idempotent.
services:
	@if command -v redis-server >/dev/null 2>&1 && { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get: install PostgreSQL and Redis servers yourself"; \
	elif ! { $(call apt_install,postgresql redis-server); }; then \
		echo "run 'sudo apt-get install postgresql redis-server' (the scale-out tests need them)"; fi

demo: install home
	$(BIN)/python -m datalake_pipelines.demo

# The UI and its daemon on the same instance and lake as the demo (code location datalake_pipelines).
dev: install home
	$(BIN)/dg dev

test: install browser services
	$(BIN)/python -m pytest -q

# dvc for the benchmark's `dvc add` row only, in a venv of its own: dvc (through hydra-core) pins
# antlr4-python3-runtime to 4.9, and Dagster's asset selection parser fails with it (it needs 4.13).
DVC_VENV ?= .venv-dvc
$(DVC_VENV)/bin/dvc:
	$(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/pip install --quiet dvc

bench: install $(DVC_VENV)/bin/dvc
	DVC=$(DVC_VENV)/bin/dvc $(BIN)/python benchmarks/ingest.py

# ruff (lint rules and formatting, checked, never rewritten here) and mypy (config in pyproject.toml).
lint: install
	$(BIN)/ruff check datalake_pipelines datalake_pipelines_tests benchmarks
	$(BIN)/ruff format --check datalake_pipelines datalake_pipelines_tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) lake .dagster_home
