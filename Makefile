# diffeosens: two commands do all set-up on a fresh machine (a clean clone with ../shared beside it).
#   make test   set-up (.venv, pinned requirements, editable package, book assets, chromium), then pytest
#   make book   set-up, the quick-profile sweeps, then the Jupyter Book (prints the path of the HTML)
# Variables: PROFILE (smoke|quick|paper, default quick), JOBS (cells in parallel), PYTHON (>= 3.11),
#   TORCH_INDEX (a pip index for torch, e.g. https://download.pytorch.org/whl/cpu for CPU-only wheels),
#   PORT (make serve).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffeosens-installed
VENDOR := book/_static/vendor/.stamp
PROFILE ?= quick
JOBS ?= 1
# Sweeps of the book, in the order the chapters appear (later chapters reuse earlier training runs).
EXPERIMENTS ?= perturbations layers architectures noisy pooling spectra activations custom scale2d scale1d theory

TORCH_INDEX ?=
PORT ?= 8000

.PHONY: all setup tools system-deps test sweeps book book-only serve bench clean

all: test

setup: tools $(STAMP) $(VENDOR)

# What the set-up itself needs on a bare Debian/Ubuntu machine: Python >= 3.11 with its venv
# module, and Node.js + npm (to vendor the book's JavaScript). Missing Debian packages are installed.
tools:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: diffeosens needs Python >= 3.11 (found: $$($(PYTHON) --version 2>&1)); run make PYTHON=python3.11 ..." >&2; exit 2; }
	@missing=""; \
	test -x $(PY) || $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -m pip install --disable-pip-version-check -q --index-url $(TORCH_INDEX) $$(grep -E '^torch(vision)?==' requirements.txt),)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-build-isolation --no-deps -e .
	@touch $@

# The book's JavaScript (require.js, the ipywidgets HTML manager) comes from npm, never from a CDN.
$(VENDOR): book/package.json book/package-lock.json
	cd book && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p book/_static/vendor
	cp book/node_modules/requirejs/require.js book/node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js book/_static/vendor/
	mkdir -p book/_extra/@jupyter-widgets/html-manager/dist
	cp book/node_modules/@jupyter-widgets/html-manager/dist/*.{woff,woff2,ttf,eot,svg} book/_extra/@jupyter-widgets/html-manager/dist/
	@touch $@

# Debian packages for the tests: chromium (browser test of the book) and FashionMNIST.
system-deps:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	test -d /usr/share/datasets/fashion-mnist || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: setup system-deps
	$(PY) -m pytest

sweeps: setup
	@i=0; n=$(words $(EXPERIMENTS)); t0=$$(date +%s); for e in $(EXPERIMENTS); do \
	  i=$$((i + 1)); echo "== sweep $$i/$$n: $$e ($(PROFILE))"; start=$$(date +%s); \
	  $(PY) -m diffeosens sweep configs/$$e.yaml --profile $(PROFILE) --jobs $(JOBS) --no-progress || exit 1; \
	  echo "== sweep $$i/$$n: $$e: $$(( $$(date +%s) - start )) s (total $$(( $$(date +%s) - t0 )) s)"; \
	done

book: sweeps book-only

book-only: setup
	@start=$$(date +%s); rm -rf _build; \
	DIFFEOSENS_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build book --config _config.yml \
	  --path-output . -W -n --keep-going || exit 1; \
	echo "== book build: $$(( $$(date +%s) - start )) s"
	@echo "The book: file://$(CURDIR)/_build/html/index.html"

# The book over HTTP (the widgets' fonts and the require.js loader need http://, not file://).
serve:
	@test -f _build/html/index.html || { echo "no book yet: run make book first" >&2; exit 2; }
	@echo "The book: http://localhost:$(PORT)/ (Ctrl-C to stop)"
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

bench: setup
	$(PY) bench/diffeo.py
	$(PY) bench/sensitivity.py
	$(PY) bench/train.py

clean:
	rm -rf $(VENV) _build .pytest_cache book/node_modules book/_static/vendor book/_extra
