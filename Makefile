# lct-train: the commands a user types. `make help` lists them.
PYTHON  ?= python3
PIP     := $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0
NPROC   ?= 1
NNODES  ?= 1
ARGS    ?=
# pytest-xdist workers for `make test` (measured on 2 cores: BENCHMARKS.md "CI"); 0 = one process
TEST_WORKERS ?= 2
PYTEST  := $(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist worksteal
TORCHRUN := $(PYTHON) -m torch.distributed.run --nnodes=$(NNODES) --nproc_per_node=$(NPROC)
# stamp of the last `make install`
INSTALLED := .installed

.PHONY: help install demo test test-fast lint stage1 causal-ft bench

help:
	@echo "make install     install lct-train (+ the CPU torch $(TORCH_VERSION) if no torch is installed)"
	@echo "make demo        install, build synthetic shards, train stage 1 + causal FT, sample and score held-out scenes"
	@echo "make test        ruff + the whole test suite (CPU)"
	@echo "make test-fast   the suite without the slow (multi-process, long) tests: the edit loop"
	@echo "make stage1      LCT stage 1 on torchrun:    make stage1 NPROC=8 ARGS='model=lct-3b ...'"
	@echo "make causal-ft   causal fine-tuning stage:   make causal-ft NPROC=8 ARGS='...'"
	@echo "make bench       CPU benchmarks (see BENCHMARKS.md)"

# An existing torch (e.g. a cluster's CUDA build) is never replaced.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null \
	  && echo "torch $$($(PYTHON) -c 'import torch; print(torch.__version__)') found: leaving it alone" \
	  || $(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]"
	@touch $(INSTALLED)

# Every command below stands alone on a fresh clone: it installs first when the package (or
# its dependencies' declaration) is newer than the last install.
$(INSTALLED): setup.py setup.cfg pyproject.toml
	$(MAKE) install

demo: $(INSTALLED)
	$(PYTHON) -m data_tools.demo $(ARGS)

# ruff, then the layer contracts of setup.cfg ([importlinter]).
lint: $(INSTALLED)
	$(PYTHON) -m ruff check src data_tools tests bench
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()" --no-cache

test: lint
	$(PYTEST) --durations=20

# the edit loop: everything but the multi-process / long tests
test-fast: $(INSTALLED)
	$(PYTEST) -m "not slow"

stage1: $(INSTALLED)
	$(TORCHRUN) -m lct_train.train.main stage=lct $(ARGS)

causal-ft: $(INSTALLED)
	$(TORCHRUN) -m lct_train.train.main stage=causal_ft $(ARGS)

bench: $(INSTALLED)
	$(PYTHON) bench/attention_block.py
	$(PYTHON) bench/loader_throughput.py
	$(PYTHON) bench/train_step.py
	$(PYTHON) bench/kv_cache_sampling.py
