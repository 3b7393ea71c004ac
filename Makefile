# dflab: `make lab` serves the dashboard, `make test` runs the tests. Both set themselves up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
PORT ?= 8866
DATA ?= $(CURDIR)/data
export DFLAB_DATA := $(DATA)

.PHONY: lab test test-fast test-colab wheel demo real bench venv lint clean

venv: $(VENV)/.installed

# uv from PyPI when the machine has none; then the locked environment (about 1 s from uv's cache),
# compiled to bytecode once: where PYTHONDONTWRITEBYTECODE is set (CI, containers) every process
# would otherwise compile torch from source again (import torch 8.7 s -> 3.7 s on 2 cores).
.uv/bin/uv:
	python3 -m venv .uv && .uv/bin/pip install -q uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --extra lab --extra landmarks --extra cluster --compile-bytecode
	touch $@

# Colab's kernel side (tests/colab/stack.txt), and dflab installed over it by the notebook's own
# Colab cell, the other packages at uv.lock's versions (tests/colab/make_env.py; seconds from
# uv's cache).
COLAB := .venv-colab
$(COLAB)/.installed: pyproject.toml uv.lock tests/colab/stack.txt tests/colab/make_env.py \
    notebooks/dashboard.ipynb Makefile | $(VENV)/.installed
	rm -rf $(COLAB)
	$(UV) venv -q --python $(PY) $(COLAB)
	$(UV) pip install -q --python $(COLAB)/bin/python -r tests/colab/stack.txt
	$(COLAB)/bin/python tests/colab/make_env.py --uv $(UV)
	touch $@

$(DATA)/demo/labels.csv: | $(VENV)/.installed
	$(VENV)/bin/dflab demo-data --out $(DATA)/demo

# a kernel started ahead of time (the first page is quick), and kernels left by closed or
# reloaded pages ended after CULL_S idle seconds (jobs run in their own processes and go on)
CULL_S ?= 300
# and the Export tab's download links (notebooks/downloads, links to exported models) served
VOILA_FLAGS := --preheat_kernel=True --pool_size=1 \
  --MappingKernelManager.cull_idle_timeout=$(CULL_S) --MappingKernelManager.cull_interval=30 \
  '--VoilaConfiguration.file_allowlist=["downloads/.*"]'

# on loopback (open it through an SSH tunnel); HOST=0.0.0.0 (or any other address) only with a
# token in DFLAB_LAB_TOKEN, which the page then asks for (app/serve.py refuses to start without)
HOST ?= 127.0.0.1
lab: $(VENV)/.installed $(DATA)/demo/labels.csv
	$(PY) -m app.serve notebooks/dashboard.ipynb --ip=$(HOST) --port=$(PORT) $(VOILA_FLAGS)

# the whole suite, then the dashboard's tests again on Colab's kernel stack (the in-process
# click-through is left to its run inside a kernel there, tests/test_colab.py). First, alone,
# the demo's learning test (its `dflab demo` runs torch on two threads: beside another worker it
# took over 1,200 s instead of about 460); then the rest on two pytest-xdist workers, each given
# whole files, the longest first (tests/conftest.py): one process kept 1.38 of the 2 cores busy
# on average (CPU time over wall time, 59.2 over 42.8 min, in a fresh-clone .ci/run). Each worker
# runs torch and BLAS on its share of the cores (tests/conftest.py).
XDIST := -n 2 --dist loadfile --no-loadscope-reorder
test: $(VENV)/.installed
	$(PY) -m pytest tests/test_learning.py $(PYTEST_ARGS)
	$(PY) -m pytest $(XDIST) --ignore=tests/test_learning.py $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-colab

# the everyday tier: every test not marked slow (no browser, no end-to-end runs), a few minutes
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Python writes its bytecode there as on Colab, even where PYTHONDONTWRITEBYTECODE is set (CI,
# containers): each dashboard job is a process of its own, and without it every one compiled
# torch again (import 16.8-20.5 s instead of 6.9-7.4 s here; the click-through inside a kernel
# took 264 s)
test-colab: $(COLAB)/.installed
	env -u PYTHONDONTWRITEBYTECODE PYTHONPATH=$(CURDIR) \
	  DFLAB_COLAB_STACK=$(CURDIR)/tests/colab/stack.txt $(COLAB)/bin/python -m pytest \
	  tests/test_colab.py tests/test_app.py tests/test_notebooks.py \
	  --deselect tests/test_app.py::test_click_through_every_stage

# a wheel for Colab without git access: copy dist/dflab-*.whl to Drive, name it in the
# notebook's DFLAB_WHEEL field
wheel: | $(UV)
	$(UV) build --wheel --out-dir dist

demo: $(VENV)/.installed $(DATA)/demo/labels.csv
	$(VENV)/bin/dflab demo --config configs/cpu.yaml

# real data: FF++ and DFDC clips and face photos of ../shared/data (or SHARED=...), detectors
# trained from scratch on real faces only and on FF++ fakes, AUCs per method (dflab demo --real)
SHARED ?= $(abspath $(CURDIR)/../shared/data)
real: $(VENV)/.installed
	$(VENV)/bin/dflab demo --real --shared $(SHARED)

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dflab app tests benchmarks

clean:
	rm -rf $(VENV) $(COLAB) .uv .pytest_cache dist
