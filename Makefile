# Transfer learning for vision in PyTorch: the course and its helper package.
# Every target sets up .venv itself (idempotent; quick once installed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# The ants-vs-bees data: TL_DATA if set, else ../shared/data when it exists (development machines and CI).
TL_DATA ?= $(wildcard $(abspath ../shared/data))
ifneq ($(strip $(TL_DATA)),)
export TL_DATA := $(abspath $(TL_DATA))
endif

.PHONY: help install test lint demo course lab bench clean

help:
	@echo "make test    run the whole test suite (lint, unit tests, solution notebooks, nbgrader end to end)"
	@echo "make demo    show the course working end to end: a head trained on frozen features, ants vs bees"
	@echo "make course  regenerate course/ (student notebooks) from solutions/ with nbgrader"
	@echo "make lab     open the course in JupyterLab"
	@echo "make bench   run the benchmarks (long) and write benchmarks/results/"
	@echo "make lint    ruff over .py and .ipynb files"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest tests solutions --nbval-lax

demo: $(INSTALLED)
	$(BIN)/python -m tlhelpers.demo

course: $(INSTALLED)
	$(BIN)/python tools/release.py

lab: $(INSTALLED)
	$(BIN)/jupyter lab course/

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
