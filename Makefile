# Two commands for a new user: `make dev` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: dev test test-fast lint install browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project definition changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,test,bench]'
	touch $@

install: $(VENV)/.installed

## Run Layer on the embedded default: broker + emulator + worker. Ctrl-C stops all three.
dev: install
	$(BIN)/layer dev

## The dashboard's browser tests drive Debian's chromium through chromedriver: installed
## here when missing and this is root with apt-get; otherwise a loud stop with the command.
BROWSER_INSTALL := apt-get update && apt-get install -y chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver (the dashboard's browser tests)"; \
		DEBIAN_FRONTEND=noninteractive sh -c '$(BROWSER_INSTALL)' >/dev/null \
			|| { echo "installing the browser failed: $(BROWSER_INSTALL)" >&2; exit 1; }; \
	else \
		echo "make test needs Debian's chromium and chromium-driver for the dashboard's browser tests: run (as root)  $(BROWSER_INSTALL)" >&2; \
		exit 1; \
	fi

## The whole check: lint, formatting, types, then every test (they start their own broker,
## emulator, workers and a headless browser).
test: install lint browser
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
