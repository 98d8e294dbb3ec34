# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project (and its dev tools) when needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint check serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## Run the demo on an embedded SQLite file (var/demo.sqlite3), no other service needed.
demo: $(STAMP)
	$(BIN)/broker demo

## Lint, type-check, check the architecture contracts, and run every test
## (the browser tests need Debian's chromium: installed here when missing).
test: $(STAMP) check
	.ci/ensure-chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

serve: $(STAMP)
	$(BIN)/broker serve

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
