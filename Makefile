# One task runner. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The light install (no PyTorch), as `pip install dupecheck` makes it: the demo runs there.
DEMO_VENV := .venv-demo

.PHONY: demo light-check test test-all lint bench bench-reframed load-serve example clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet -e .
	touch $@

demo: $(DEMO_VENV)/.installed
	VENV=$(DEMO_VENV) bash scripts/demo.sh

light-check: $(DEMO_VENV)/.installed
	$(PYTHON) scripts/check_light_install.py $(DEMO_VENV)

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
	rm -rf $(VENV) $(DEMO_VENV) .cache .pytest_cache
