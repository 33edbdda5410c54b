# Set-up and entry points. `make demo` and `make test` install everything first (into .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo clean

install: $(STAMP)

# torch is installed first and pinned: the CPU wheel lies on local disk; any other torch
# requirement could pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -m "not slow"

test-all: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/stae data
	$(BIN)/stae predict --frame-size 256 --clip city --output-dir out --force
	@echo "demo outputs are in $(CURDIR)/out/"

clean:
	rm -rf $(VENV) out .pytest_cache
