# Every target bootstraps .venv itself, idempotently: a fresh clone needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint bench screenshots venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/leadpipe demo

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# Flower screenshots for the README (needs Chromium: apt-get install -y chromium).
screenshots: $(STAMP)
	$(BIN)/python docs/flower_screenshots.py

clean:
	rm -rf $(VENV) .leadpipe .pytest_cache .mypy_cache .ruff_cache
