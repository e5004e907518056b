# diffeosens: two commands do all set-up on a fresh machine (a clean clone with ../shared beside it).
#   make test   set-up (.venv, pinned requirements, editable package, book assets, chromium), then pytest
#   make book   set-up, the laptop-profile sweeps (~2 h on 2 cores; PROFILE=quick: a ~40-min preview), then the
#               Jupyter Book (prints the path of the HTML)
#   make lock   re-resolve requirements.txt / requirements-test.txt into the hashed .lock files
#   make dry-run   the paper grid at tiny sizes, then its book (checks the paper profile before a GPU run)
#   make plan      what the paper profile costs on this machine (cells, hours, disk)
# Variables: PROFILE (smoke|quick|laptop|paper|dry, default laptop: diffeosens.profiles.DEFAULT), JOBS (cells in parallel), PYTHON (>= 3.11),
#   TORCH_INDEX (a pip index for torch, e.g. https://download.pytorch.org/whl/cpu for CPU-only wheels),
#   PORT (make serve).
# Environment: requirements.txt holds the exact pins of the direct dependencies (edited by hand),
# requirements-test.txt those of the test tools; `make lock` (uv) resolves them into
# requirements.lock and requirements-test.lock, the whole tree with sha256 hashes of every file
# on PyPI (all platforms and Pythons >= 3.11), and derives requirements-notorch.lock: the same
# lock without torch, torchvision and PyTorch's CUDA libraries. pip installs the locks with
# --require-hashes. With TORCH_INDEX set, the notorch lock is installed with hashes and then torch
# and torchvision alone, at the pins of requirements.txt, from TORCH_INDEX: that index's wheels
# (+cpu builds) are not on PyPI and have other hashes, so these two files are checked by version
# and HTTPS only. `make test` installs requirements-test.lock on top; `make book` does not.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffeosens-installed
TEST_STAMP := $(VENV)/.diffeosens-test-installed
# The lock `make` installs: the whole tree, or without torch when TORCH_INDEX provides it.
LOCK = $(if $(TORCH_INDEX),requirements-notorch.lock,requirements.lock)
PIP_INSTALL = $(PY) -m pip install --disable-pip-version-check -q
# `make lock`: uv at this version, resolving for every platform and Python >= 3.11 from PyPI
# (LOCK_FLAGS=--upgrade to move the unpinned dependencies to their newest releases).
UV_VERSION ?= 0.13.9
LOCK_FLAGS ?=
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
  --default-index https://pypi.org/simple --custom-compile-command 'make lock' $(LOCK_FLAGS)
VENDOR := book/_static/vendor/.stamp
PROFILE ?= laptop
JOBS ?= 1
# Sweeps of the book, in the order the chapters appear (later chapters reuse earlier training runs).
EXPERIMENTS ?= perturbations layers architectures noisy pooling spectra activations custom scale2d scale1d theory

TORCH_INDEX ?=
PORT ?= 8000

.PHONY: all setup tools system-deps test lock sweeps book book-only dry-run plan serve bench clean data

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

$(STAMP): requirements.txt $(LOCK) pyproject.toml
	@for pin in $$(grep -E '^[A-Za-z]' requirements.txt | sed 's/\[[^]]*\]//'); do \
	  grep -qiE "^$${pin//./\\.}( |$$)" requirements.lock || { \
	    echo "error: requirements.lock lacks $$pin of requirements.txt: run make lock" >&2; exit 2; }; done
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --require-hashes -r $(LOCK)
	$(if $(TORCH_INDEX),$(PIP_INSTALL) --index-url $(TORCH_INDEX) $$(grep -E '^torch(vision)?==' requirements.txt),)
	$(PIP_INSTALL) --no-build-isolation --no-deps -e .
	@touch $@

$(TEST_STAMP): $(STAMP) requirements-test.lock
	$(PIP_INSTALL) --require-hashes -r requirements-test.lock
	@touch $@

lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) uv==$(UV_VERSION)
	$(UV_COMPILE) requirements.txt -o requirements.lock
	$(UV_COMPILE) requirements-test.txt -c requirements.lock -o requirements-test.lock
	{ echo '# requirements.lock without torch, torchvision, triton and the CUDA libraries (nvidia-*, cuda-*),'; \
	  echo '# for TORCH_INDEX (e.g. CPU wheels): make installs this, then torch and torchvision from that index.'; \
	  echo '# Written by `make lock`: do not edit.'; \
	  awk '/^[^ #]/ { skip = ($$0 ~ /^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)[=; ]/) } !skip' requirements.lock | sed '1,2d'; \
	} > requirements-notorch.lock

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

test: setup system-deps $(TEST_STAMP)
	$(PY) -m pytest

sweeps: setup
	@i=0; n=$(words $(EXPERIMENTS)); t0=$$(date +%s); for e in $(EXPERIMENTS); do \
	  i=$$((i + 1)); echo "== sweep $$i/$$n: $$e ($(PROFILE))"; start=$$(date +%s); \
	  $(PY) -m diffeosens sweep configs/$$e.yaml --profile $(PROFILE) --jobs $(JOBS) --progress lines || exit 1; \
	  echo "== sweep $$i/$$n: $$e: $$(( $$(date +%s) - start )) s (total $$(( $$(date +%s) - t0 )) s)"; \
	done

book: sweeps book-only

book-only: setup
	@start=$$(date +%s); rm -rf _build; \
	DIFFEOSENS_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build book --config _config.yml \
	  --path-output . -W -n --keep-going || exit 1; \
	echo "== book build: $$(( $$(date +%s) - start )) s"
	@echo "The book: file://$(CURDIR)/_build/html/index.html"

# make dry-run: the paper profile's grid at tiny sizes (PROFILE=dry: every network, activation, noise
# level, task, variant, delta and seed of the paper grid) into results/dry, then the
# book from those results with -W into _dry/. Finds a crash before a GPU or cluster run does.
dry-run: setup
	@$(MAKE) --no-print-directory sweeps PROFILE=dry
	@start=$$(date +%s); rm -rf _dry; \
	DIFFEOSENS_PROFILE=dry $(VENV)/bin/jupyter-book build book --config _config.yml \
	  --path-output _dry -W -n --keep-going || exit 1; \
	echo "== dry-run book build: $$(( $$(date +%s) - start )) s"

# make plan: cells, hours on this machine and disk of PLAN_PROFILE (unit costs timed once, cached in results/costs/).
PLAN_PROFILE ?= paper
plan: setup
	$(PY) -m diffeosens plan --profile $(PLAN_PROFILE)

# The book over HTTP (the widgets' fonts and the require.js loader need http://, not file://).
serve:
	@test -f _build/html/index.html || { echo "no book yet: run make book first" >&2; exit 2; }
	@echo "The book: http://localhost:$(PORT)/ (Ctrl-C to stop)"
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

bench: setup
	$(PY) bench/diffeo.py
	$(PY) bench/sensitivity.py
	$(PY) bench/train.py

# make data: download DATASETS with torchvision (md5-checked) unless a local copy is found (DIFFEOSENS_DATA, ../shared/data, ...).
DATASETS ?= cifar10 mnist
data: $(STAMP)
	$(PY) -m diffeosens data download $(DATASETS)

clean:
	rm -rf $(VENV) _build _dry .pytest_cache book/node_modules book/_static/vendor book/_extra
