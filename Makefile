# Two commands on a fresh machine: `make run` and `make test`. Everything they need is
# installed here on first use (a .venv with the pinned CPU torch, then the MNIST files).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml

.PHONY: setup data run test test-all lint format bench clean image image-cuda image-test

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

# Not in CI (~40 min on 2 cores): workload W side by side, medians of 3, Flower included (the
# `bench` extra), then the 1,000-client scale run and CPU aggregation (docs/benchmarks.md).
bench: data
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/speed.py --repeats 3
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/aggregate.py --device cpu

# Container images (images/). IMAGE names the CPU image; the CUDA one gets a -cuda tag suffix.
IMAGE ?= fedprune:0.1.0
DOCKER ?= docker

image:
	$(DOCKER) build -f images/Dockerfile -t $(IMAGE) .

image-cuda:
	$(DOCKER) build -f images/Dockerfile.cuda -t $(IMAGE)-cuda .

# Not in CI (minutes; root for dockerd and debootstrap): builds images/Dockerfile on a base made
# here by debootstrap and checks the container (images/image-test.sh says what and why).
image-test: setup
	images/image-test.sh

clean:
	rm -rf fedprune-runs .pytest_cache .ruff_cache
