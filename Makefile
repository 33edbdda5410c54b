# Set-up and entry points. `make demo` and `make test` install everything first (into .venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYRIGHT_VERSION := 1.1.414
PYRIGHT := .tools/node_modules/.bin/pyright

.PHONY: install test test-all typecheck demo clean

install: $(STAMP)

# torch is installed first and pinned: the CPU wheel lies on local disk; any other torch
# requirement could pull a multi-GB CUDA build. tensorrt-stubs is installed without its
# dependency (a TensorRT download stub that fails): it only serves the type checker.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	$(BIN)/python -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

# TensorRT code cannot run here; pyright (mypy cannot parse TensorRT's stubs) checks every call
# against the TensorRT 10 API instead.
$(PYRIGHT):
	npm install --silent --prefix .tools pyright@$(PYRIGHT_VERSION)

typecheck: install $(PYRIGHT)
	$(PYRIGHT)

test: install typecheck
	$(BIN)/python -m pytest -m "not slow"

test-all: install typecheck
	$(BIN)/python -m pytest

demo: install
	$(BIN)/stae data
	$(BIN)/stae predict --frame-size 256 --clip city --output-dir out --force
	@echo "demo outputs are in $(CURDIR)/out/"

clean:
	rm -rf $(VENV) .tools out .pytest_cache
