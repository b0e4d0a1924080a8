# Set-up and entry points. `make run` and `make test` are all a fresh machine needs,
# given the offline data mirror at ../shared/data (or BASIN_DATA_MIRROR set elsewhere).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export BASIN_DATA_MIRROR ?= $(abspath ../shared/data)

.PHONY: install run test lint clean

$(BIN)/basin: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned, so that pip never resolves a (multi-GB) CUDA build
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

install: $(BIN)/basin

run: install
	$(BIN)/basin data verify
	$(BIN)/basin reproduce attractor-paper --quick --out runs/attractor-quick --seed 0

lint: install
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
