# make run   - set up .venv and run the notebook's depth study on its defaults
# make test  - set up .venv (with the dev and ray extras) and run the whole test suite (what CI runs)
# make test-min - the same suite in .venv-min, on the lowest versions pyproject.toml allows
# make test-gpu  - the tests marked cuda (every command on the GPU); needs a CUDA device
# make lint  - ruff check, ruff format --check and mypy (the configuration is in pyproject.toml)
# make bench - speed, memory and start-up against side-by-side references -> benchmarks/results.md
# make docs  - rerun every command README.md and docs/ show, and redraw their pictures (docs/make_docs.py)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-min test-gpu lint bench docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,ray]"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/bncli depth-study --init kaiming

test: setup
	$(BIN)/python -m pytest

test-gpu: setup
	$(BIN)/python -m pytest -m cuda -rs

.venv-min/.installed: pyproject.toml constraints-min.txt
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/pip install -q --disable-pip-version-check -c constraints-min.txt -e ".[dev,ray]"
	touch .venv-min/.installed

test-min: .venv-min/.installed
	.venv-min/bin/python -m pytest

lint: setup
	$(BIN)/ruff check bncli tests benchmarks docs
	$(BIN)/ruff format --check bncli tests benchmarks docs
	$(BIN)/mypy bncli

bench: setup
	$(BIN)/python benchmarks/bench_depth.py

docs: setup
	$(BIN)/python docs/make_docs.py

clean:
	rm -rf $(VENV) .venv-min .pytest_cache
