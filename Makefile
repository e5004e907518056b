# diffeosens: two commands do all set-up on a fresh machine.
#   make test   set-up (.venv + pinned requirements + editable package), then the test suite
#   make book   set-up, the quick-profile experiments, then the Jupyter Book (HTML)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffeosens-installed

.PHONY: all setup test book bench clean

all: test

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e .
	@touch $@

test: setup
	$(PY) -m pytest

book: setup
	$(PY) bench/diffeo.py --quick

bench: setup
	$(PY) bench/diffeo.py

clean:
	rm -rf $(VENV) _build .pytest_cache
