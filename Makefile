# Two commands for a new user: `make dev` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: dev test test-fast lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project definition changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,test]'
	touch $@

install: $(VENV)/.installed

## Run Layer on the embedded default: broker + emulator + worker. Ctrl-C stops all three.
dev: install
	$(BIN)/layer dev

## The whole check: lint, formatting, types, then every test (they start their own broker,
## emulator and workers).
test: install lint
	$(BIN)/python -m pytest -q

## Lint, formatting and types alone (part of `make test`).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The edit loop: unit and agent tests only (no broker, no processes), in seconds.
test-fast: install
	$(BIN)/python -m pytest -q tests/unit tests/agents

clean:
	rm -rf $(VENV) .layer-data .pytest_cache
