# One task runner. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-all lint bench bench-reframed load-serve example clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	bash scripts/demo.sh

test: $(VENV)/.installed
	$(PY) -m pytest

test-all: $(VENV)/.installed
	$(PY) -m pytest -m "slow or not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests scripts

bench: $(VENV)/.installed
	$(PY) scripts/bench.py

bench-reframed: $(VENV)/.installed
	$(PY) scripts/bench_reframed.py

load-serve: $(VENV)/.installed
	$(PY) scripts/load_serve.py

example: $(VENV)/.installed
	$(PY) scripts/make_example.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
