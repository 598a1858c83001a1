# Two entry points on a fresh machine with python3 and make: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DATALAKE_BASE_PATH ?= $(CURDIR)/lake

.PHONY: install demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m datalake_pipelines.demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/ingest.py

# ruff (lint rules and formatting, checked, never rewritten here) and mypy (config in pyproject.toml).
lint: install
	$(BIN)/ruff check datalake_pipelines datalake_pipelines_tests benchmarks
	$(BIN)/ruff format --check datalake_pipelines datalake_pipelines_tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) lake .dagster_home
