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

# DEV_ARGS: extra `dagster dev` options, e.g. `make dev DEV_ARGS="-p 3001"`.
DEV_ARGS ?=

dev: install
	# Dagster needs its home to exist; the project's dagster.yaml is copied in once.
	mkdir -p $(CLAY_HOME)/dagster
	[ -f $(CLAY_HOME)/dagster/dagster.yaml ] || cp dagster.yaml $(CLAY_HOME)/dagster/
	DAGSTER_HOME=$(CLAY_HOME)/dagster $(BIN)/dagster dev -w workspace.yaml $(DEV_ARGS)

clean:
	# Stop the embedded Postgres servers first (the demo's and `demo --real`'s): deleting the data
	# directory under a running server leaves it running on files that are gone.
	-[ ! -x $(BIN)/clay-assets ] || $(BIN)/clay-assets db stop
	-[ ! -x $(BIN)/clay-assets ] || CLAY_HOME=$(CLAY_HOME)/real $(BIN)/clay-assets db stop
	rm -rf $(CLAY_HOME)
