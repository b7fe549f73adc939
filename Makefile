# Each target sets up its own virtual environment, so both quick-start commands work on a fresh clone.
PYTHON ?= python3
VENV := .venv
READY := $(VENV)/.ready

.PHONY: test test-all lint bench demo clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	touch $(READY)

lint: $(READY)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

## The test command: lint, types, then the whole suite except long soak runs.
test: lint
	$(VENV)/bin/python -m pytest -m "not slow" -q

## Everything, including the slow soak profiles.
test-all: lint
	$(VENV)/bin/python -m pytest -q

bench: $(READY)
	$(VENV)/bin/python -m lash_store.bench commit
	$(VENV)/bin/python -m lash_store.bench queue

## The chaos demo: worker processes serve sessions while a chaos monkey kills them.
demo: $(READY)
	$(VENV)/bin/lash-store demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
