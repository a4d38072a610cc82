# actbench: `make sweep` runs the blog's comparison end to end (set-up included); `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# pytest-xdist processes for `make test` (the cluster tests share one)
TEST_WORKERS ?= 2
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: sweep setup data test test-fast bench gpu-wheels report tensorboard slurm-up slurm-down clean

sweep: setup data                 ## the blog's sweep: 5 activations x 3 seeds, then the report
	$(PY) -m actbench.train -m experiment=blog

setup: $(VENV)/.installed         ## virtual environment with actbench and its dependencies

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { \
	  command -v apt-get >/dev/null || exit 1; \
	  echo "installing Debian's python3-venv"; rm -rf $(VENV); \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: setup                       ## find Fashion-MNIST; on Debian/Ubuntu install dataset-fashion-mnist if missing
	@$(PY) -m actbench.data 2>/dev/null || { \
	  if command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  fi; \
	  $(PY) -m actbench.data; }

test: setup                       ## the test suite (offline, CPU, about 12-15 minutes on 2 cores)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-fast: setup                  ## the tests not marked slow (no training on real data, no services): minutes
	$(PY) -m pytest -q -m "not slow"

bench: setup data                 ## speed: actbench vs a plain PyTorch loop
	$(PY) scripts/bench.py

gpu-wheels: setup                 ## wheels of what torch lacks on a GPU machine without network, for scripts/gpu-check.sh
	$(PY) -m pip download --quiet --only-binary :all: -d .whl/gpu hydra-core hydra-submitit-launcher lightning tensorboard \
	  matplotlib scipy optuna pyyaml mnist1d requests filelock flufl.lock pytest pytest-xdist setuptools
	rm -f .whl/gpu/torch-* .whl/gpu/nvidia_* .whl/gpu/triton-*

report: setup                     ## rebuild the report of the blog sweep
	$(PY) -m actbench.report runs/blog

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs

slurm-up:                         ## a one-node SLURM on localhost (Debian, root), for the cluster tests
	scripts/slurm-local.sh up

slurm-down:
	scripts/slurm-local.sh stop

clean:
	rm -rf runs .pytest_cache
