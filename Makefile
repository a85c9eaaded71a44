# Two commands for a new user: `make demo` and `make test`. Both create the virtual environment
# when needed, install once (idempotent, fast on a second run) and then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch by default; on a GPU machine: make demo TORCH="torch==2.x"
TORCH ?= torch==2.13.0
TORCHSORT ?= torchsort==0.1.10
BIN := $(VENV)/bin
STAMP := $(VENV)/.ecgka-install
# What the installed environment was made from: a change re-runs the install.
INSTALL_KEY := $(TORCH) $(TORCHSORT) $(shell cat pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-gpu install torchsort browser lint bench clean

demo: install
	@$(BIN)/ecgka run pipelines/demo.yaml --out $(DEMO_OUT)

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast lane while developing: everything but the end-to-end tests marked `slow` (under 2 minutes
# on 2 cores); `make test` runs them all.
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The CUDA tests only (tests/test_gpu.py: every method in fp32 and bf16 + compile, resume, CUDA vs CPU
# predictions, torchsort's CUDA kernel, NCCL DDP); they skip where torch sees no GPU.
test-gpu: install
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

# One install for every target: the package with its `dev` extra (pytest, Dask, DuckDB, Polars,
# TensorBoard, psutil for the benchmarks). The demo itself needs only `pip install -e .`.
install: $(BIN)/python
	@if [ "$$(cat $(STAMP) 2>/dev/null)" = "$(INSTALL_KEY)" ] && $(BIN)/python -c "import ecgka, torchsort" 2>/dev/null; then \
	  echo "environment $(VENV) is up to date"; \
	else \
	  set -e; \
	  echo "installing $(TORCH) into $(VENV)"; \
	  $(BIN)/pip install -q --disable-pip-version-check "$(TORCH)" numpy setuptools wheel; \
	  $(MAKE) --no-print-directory torchsort; \
	  $(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"; \
	  echo "$(INSTALL_KEY)" > $(STAMP); \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip

# torchsort ships only as source: build it against the installed torch, without build isolation.
# With a CPU torch, an nvcc on PATH makes the build ask for CUDA_HOME and fail, so nvcc is hidden
# from the build; with a CUDA torch the CUDA extension is built. A torchsort built against another
# torch (ABI mismatch) fails the check below and is rebuilt. Where torch sees a GPU the check also runs
# soft_sort on a CUDA tensor: a CPU-only torchsort fails it and is rebuilt with its CUDA extension.
TORCHSORT_CHECK := import torch, torchsort; torchsort.soft_sort(torch.zeros(1, 3)); \
  cuda = torch.cuda.is_available(); \
  assert not cuda or torchsort.soft_sort(torch.zeros(1, 3, device='cuda')).is_cuda
torchsort:
	@if $(BIN)/python -c "$(TORCHSORT_CHECK)" 2>/dev/null; then \
	  echo "torchsort works with the installed torch"; \
	else \
	  cuda=$$($(BIN)/python -c "import torch; print(torch.version.cuda or '')"); \
	  if [ -z "$$cuda" ]; then \
	    build_path=$$(echo "$$PATH" | tr ':' '\n' | while read -r d; do [ -n "$$d" ] && [ ! -x "$$d/nvcc" ] && printf '%s:' "$$d"; done); \
	    echo "building torchsort (CPU extension; nvcc hidden from the build)"; \
	    env PATH="$${build_path%:}" CUDA_HOME= $(BIN)/pip install -q --disable-pip-version-check --no-build-isolation --no-cache-dir --force-reinstall --no-deps "$(TORCHSORT)"; \
	  else \
	    echo "building torchsort (CUDA $$cuda extension)"; \
	    FORCE_CUDA=1 $(BIN)/pip install -q --disable-pip-version-check --no-build-isolation --no-cache-dir --force-reinstall --no-deps "$(TORCHSORT)"; \
	  fi; \
	  $(BIN)/python -c "$(TORCHSORT_CHECK); print('torchsort OK' + (' (CUDA)' if cuda else ''))"; \
	fi

# Headless Chromium (Debian's package) renders the HTML report in the report tests.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report rendering test"; \
	  (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "WARNING: could not install chromium: the report rendering test will be skipped"; \
	else echo "chromium not found and cannot be installed here: the rendering test will be skipped"; fi

lint: install
	$(BIN)/ruff check ecgka tests benchmarks

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) outputs .pytest_cache
