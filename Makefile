# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# The project's commands come from the virtual environment; Kedro never asks about telemetry.
export PATH := $(BIN):$(PATH)
export KEDRO_DISABLE_TELEMETRY := 1

.PHONY: install run repro dvc test chromium lint viz clean bench

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

dvc: install  ## dvc.yaml, generated from the Kedro pipelines and catalog (never edited by hand)
	python -m compactkd.dvc_stages

test: install chromium  ## the test suite
	python -m pytest

# tests/test_viz.py drives Debian's Chromium headless (never a browser Playwright downloads),
# installed with its recommended packages, as on the machine where the tests were verified.
chromium:
	@if ! command -v chromium >/dev/null; then \
	    if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	    elif command -v sudo >/dev/null; then sudo="sudo"; \
	    else echo "chromium is missing: install Debian's chromium package as root" >&2; exit 1; fi; \
	    $$sudo apt-get update -q && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

lint: install
	ruff check src tests docs benchmarks
	ruff format --check src tests docs benchmarks

viz: install
	kedro viz run --host 127.0.0.1

bench: install  ## benchmarks/results.md, measured here (~25 min on 2 CPU cores); not part of test
	python benchmarks/bench.py $(BENCH_ARGS)

clean:  ## pipeline outputs only; the virtual environment stays
	find data -type f ! -name .gitkeep -delete
