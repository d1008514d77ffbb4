# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# The project's commands come from the virtual environment; Kedro never asks about telemetry.
export PATH := $(BIN):$(PATH)
export KEDRO_DISABLE_TELEMETRY := 1

.PHONY: install run repro test lint viz clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install  ## the full default pipeline
	kedro run

repro: install  ## the same, through DVC (reruns only what changed)
	dvc repro

test: install  ## the test suite
	python -m pytest

lint: install
	ruff check src tests docs benchmarks
	ruff format --check src tests docs benchmarks

viz: install
	kedro viz run

bench: install  ## benchmarks/results.md, measured here (~25 min on 2 CPU cores); not part of test
	python benchmarks/bench.py $(BENCH_ARGS)

clean:  ## pipeline outputs only; the virtual environment stays
	find data -type f ! -name .gitkeep -delete
