# One task runner. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The light install (no PyTorch), as `pip install dupecheck` makes it: the demo runs there.
DEMO_VENV := .venv-demo

.PHONY: demo light-check test test-all lint docs screenshots dist bench bench-reframed load-serve example clean

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

$(VENV)/.docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,docs]'
	touch $@

# The site, built strictly (a broken link or a missing page fails); its generated pages
# (reference, speed) must be what scripts/gen_docs.py writes.
docs: $(VENV)/.docs
	$(PY) scripts/gen_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

screenshots: $(VENV)/.installed
	$(PY) scripts/screenshots.py

# A wheel and an sdist that a package index accepts (twine check).
dist: $(VENV)/.docs
	rm -rf dist
	$(PY) -m build --outdir dist . >/dev/null
	$(VENV)/bin/twine check --strict dist/*

bench: $(VENV)/.installed
	$(PY) scripts/bench.py

bench-reframed: $(VENV)/.installed
	$(PY) scripts/bench_reframed.py

load-serve: $(VENV)/.installed
	$(PY) scripts/load_serve.py

example: $(VENV)/.installed
	$(PY) scripts/make_example.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) .cache .pytest_cache site dist
