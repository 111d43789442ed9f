# Fresh machine with Python 3.11: `make demo` and `make test` create .venv and install first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export CLAY_HOME ?= $(CURDIR)/.clay

.PHONY: install demo test dev clean benchmarks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	# torch is pinned to the CPU wheel first so nothing pulls the multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/clay-assets demo

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

dev: install
	# Dagster needs its home to exist; the project's dagster.yaml is copied in once.
	mkdir -p $(CLAY_HOME)/dagster
	[ -f $(CLAY_HOME)/dagster/dagster.yaml ] || cp dagster.yaml $(CLAY_HOME)/dagster/
	DAGSTER_HOME=$(CLAY_HOME)/dagster $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(CLAY_HOME)
