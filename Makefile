# Set-up and entry points. `make run` and `make test` are all a fresh machine needs.
# Data: the offline mirror ($BASIN_DATA_MIRROR, else ../shared/data when it exists) is used
# and verified first; without one, `make run` downloads what the main job needs from the
# official sources (verified, into ~/.cache/basin/data), and fails in one line if offline.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEFAULT_MIRROR := $(abspath ../shared/data)
ifeq ($(strip $(BASIN_DATA_MIRROR)),)
  ifneq ($(wildcard $(DEFAULT_MIRROR)/.),)
    export BASIN_DATA_MIRROR := $(DEFAULT_MIRROR)
  endif
endif
# the datasets `basin reproduce attractor-paper` reads
RUN_DATASETS := mnist fashion-mnist cifar10-bw notmnist omniglot

.PHONY: install run test test-fast lint typecheck clean

$(BIN)/basin: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned, so that pip never resolves a (multi-GB) CUDA build
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	# with the ray extra: CI runs the Ray tests on a local 2-CPU cluster
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,ray]'
	touch $@

install: $(BIN)/basin

run: install
ifneq ($(strip $(BASIN_DATA_MIRROR)),)
	$(BIN)/basin data verify
else
	@echo "no data mirror (set BASIN_DATA_MIRROR to use one): downloading $(RUN_DATASETS)"
	$(BIN)/basin data fetch $(RUN_DATASETS)
endif
	$(BIN)/basin reproduce attractor-paper --quick --out runs/attractor-quick --seed 0

lint: install
	$(BIN)/ruff check src tests benchmarks

# mypy on src/basin (config in pyproject.toml); part of `make test`
typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q --durations=20

# unit tests only: no slow pipelines, no data mirror
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
