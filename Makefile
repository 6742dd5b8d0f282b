# One virtual environment for everything; torch is installed first and pinned so that no
# CUDA wheels are pulled on CPU-only machines.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: setup demo test bench plan clean mutants

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/r1v2 demo --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q -n 2 tests

# Mutation testing of the core modules, each against its own tests, in a copy of the tree
# (MUTANTS_DIR, default /tmp/r1v2-mutants-<user>); not part of CI. MUTANTS="ssb batching"
# runs some groups (tests/mutation/run.py lists them), MUTANTS="--again GROUP" re-tests its
# survivors, MUTANTS="--again --ids=N,N GROUP" only those mutants; verdicts go to
# docs/testing.md. Never run mutmut in MUTANTS_DIR while a run is going (it hangs).
MUTANTS ?=
mutants: $(VENV)/.mutants-installed
	$(BIN)/python tests/mutation/run.py $(MUTANTS)

$(VENV)/.mutants-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test,mutants]"
	touch $@

# the Tunix peer: its import-time needs (the bench extra), then Tunix itself without its
# own pins (they would downgrade transformers; docs/benchmarks.md)
bench: $(VENV)/.bench-installed
	$(BIN)/r1v2 bench

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test,bench]"
	$(BIN)/pip install -q --no-deps google-tunix==0.1.7
	touch $@

clean:
	rm -rf $(VENV) runs
