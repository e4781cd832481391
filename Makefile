# make run   - set up .venv and run the notebook's depth study on its defaults
# make test  - set up .venv (with the dev and ray extras) and run the whole test suite (what CI runs)
# make test-min - the same suite in .venv-min, on the lowest versions pyproject.toml allows
# make test-gpu  - the tests marked cuda (every command on the GPU); needs a CUDA device
# make test-vision - the tests marked vision (bncli probe on torchvision, timm, transformers) in .venv-vision,
#               built from constraints-vision.txt (torch 2.14.1 and torchvision 0.29.1 from local files, ~2.5 min)
# make lint  - ruff check, ruff format --check and mypy (the configuration is in pyproject.toml)
# make bench - speed, memory and start-up against side-by-side references -> benchmarks/results.md
# make docs  - rerun every command README.md and docs/ show, and redraw their pictures (docs/make_docs.py);
#               the probe pictures are drawn in .venv-vision, which it builds first
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VISION := .venv-vision
VISION_STAMP := $(VISION)/.installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: setup setup-vision run test test-min test-gpu test-vision lint bench docs clean

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

$(VISION_STAMP): pyproject.toml constraints-vision.txt
	$(PYTHON) -m venv $(VISION)
	$(VISION)/bin/pip install -q --disable-pip-version-check -c constraints-vision.txt -e ".[dev,vision]"
	touch $(VISION_STAMP)

setup-vision: $(VISION_STAMP)

test-vision: $(VISION_STAMP)
	$(OFFLINE) $(VISION)/bin/python -m pytest -m vision -rs

lint: setup
	$(BIN)/ruff check bncli tests benchmarks docs
	$(BIN)/ruff format --check bncli tests benchmarks docs
	$(BIN)/mypy bncli

bench: setup
	$(BIN)/python benchmarks/bench_depth.py

docs: setup $(VISION_STAMP)
	$(OFFLINE) BNCLI_VISION_PYTHON=$(VISION)/bin/python $(BIN)/python docs/make_docs.py

clean:
	rm -rf $(VENV) .venv-min $(VISION) .pytest_cache
