# Each target sets up its own virtual environment, so both quick-start commands work on a fresh clone.
PYTHON ?= python3
VENV := .venv
RUNTIME := $(VENV)/.ready-runtime
DEV := $(VENV)/.ready-dev

.PHONY: test test-all lint external bench bench-postgres demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

## The package and its command (small and quick: what the demo needs).
$(RUNTIME): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e '.[cli]'
	touch $(RUNTIME)

## Everything the tests use, the benchmark peers included.
$(DEV): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	touch $(DEV) $(RUNTIME)

## The chaos demo: worker processes serve sessions while a chaos monkey kills them.
demo: $(RUNTIME)
	$(VENV)/bin/lash-store demo

lint: $(DEV)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts
	$(VENV)/bin/mypy

## The test command: lint, types, then the whole suite except long soak runs.
test: lint
	$(VENV)/bin/python -m pytest -m "not slow" -q

## The frameworks' own suites (LangGraph, OpenAI Agents SDK) on the adapters next to their stock backends.
## Their sdists and a virtual environment for them are fetched into a cache outside the repository.
external: $(DEV)
	$(VENV)/bin/python scripts/external_suites.py

## Everything, including the slow soak profiles (100,000+ stateful steps, 2,000 crash kills).
test-all: lint
	$(VENV)/bin/python -m pytest -q

bench: $(DEV)
	$(VENV)/bin/lash-store bench commit --peers --plot docs/bench-commit.png
	$(VENV)/bin/lash-store bench resume
	$(VENV)/bin/lash-store bench gc
	$(VENV)/bin/lash-store bench queue

## The PostgreSQL benchmarks, each on a throwaway durable server (fsync=on) against plain psycopg.
bench-postgres: $(DEV)
	$(VENV)/bin/lash-store bench commit --backend postgres --peers
	$(VENV)/bin/lash-store bench queue --backend postgres
	$(VENV)/bin/lash-store bench list --backend postgres

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
