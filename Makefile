# make run   - set up .venv and run the notebook's depth study on its defaults
# make test  - set up .venv and run the whole test suite (what CI runs)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/bncli depth-study --init kaiming

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check bncli tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
