# Two commands on a fresh machine: `make run` and `make test`. Everything they need is
# installed here on first use (a .venv with the pinned CPU torch, then the MNIST files).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml

.PHONY: setup data run test test-all lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

data: setup
	$(BIN)/fedprune data fetch mnist

run: data
	$(BIN)/fedprune run $(CONFIG)

test: data
	$(BIN)/python -m pytest -m "not slow"

test-all: data
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf fedprune-runs .pytest_cache .ruff_cache
