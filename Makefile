# Two commands for a fresh machine: `make run` and `make test`.
# Each creates .venv and installs what is missing (a stamp file tracks pyproject.toml).
# The interpreter of .venv: Debian's python3.11 where it can make a venv, else python3 (`make
# PY=...` picks another). Debian links libpython into the interpreter; a --enable-shared build without
# --enable-optimizations (pyenv's default) ran the storm benchmark about 15% slower on the same code.
PY ?= $(shell /usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo /usr/bin/python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint eval bench browser-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium: the browser tests will fail"; }

run: $(STAMP)
	$(BIN)/orderagent demo

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

eval: $(STAMP)
	$(BIN)/orderagent eval --trials 3 --json var/eval.json --report var/eval-report

bench: $(STAMP)
	$(BIN)/orderagent bench --json var/bench.json

clean:
	rm -rf $(VENV) var/*.db
