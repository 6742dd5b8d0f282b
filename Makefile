# One virtual environment for everything; torch is installed first and pinned so that no
# CUDA wheels are pulled on CPU-only machines.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: setup demo test bench plan clean

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

bench: setup
	$(BIN)/r1v2 bench

clean:
	rm -rf $(VENV) runs
