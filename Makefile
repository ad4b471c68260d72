# Two entry points for a new machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LEGACY := .venv-legacy
LEGACY_STAMP := $(LEGACY)/.installed
LOWEST := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed
# An editable install that puts the checkout on sys.path (not setuptools' import hook, which comes after the
# path search): else `python -m hfcache` run from the clone's parent folder finds the checkout folder `hfcache/`
# first, as an empty namespace package, and fails.
EDITABLE := --config-settings editable_mode=compat

.PHONY: demo test test-legacy test-lowest lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(EDITABLE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/ruff check hfcache tests scripts
	$(BIN)/python -m pytest -q

# The legacy offline recipe (datasets 2.x scripts and load_metric) in a second venv; hfcache runs from .venv.
$(LEGACY_STAMP): tests/legacy/requirements.txt
	test -x $(LEGACY)/bin/python || $(PYTHON) -m venv $(LEGACY)
	$(LEGACY)/bin/python -m pip install -q -r tests/legacy/requirements.txt
	touch $(LEGACY_STAMP)

test-legacy: $(STAMP) $(LEGACY_STAMP)
	HFCACHE_PYTHON=$(CURDIR)/$(BIN)/python $(LEGACY)/bin/python -m pytest -q --noconftest -p no:cacheprovider tests/legacy

# The lowest versions pyproject.toml allows (each `>=` bound pinned with `==`; what they need, as pip resolves
# it), in a third venv: a bound that is not true fails here.
$(LOWEST_STAMP): pyproject.toml .ci/lowest.py
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	$(LOWEST)/bin/python .ci/lowest.py pyproject.toml > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints.txt -e '.[dev]' $(EDITABLE)
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST)/bin/python .ci/lowest.py pyproject.toml --check
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check hfcache tests scripts

clean:
	rm -rf $(VENV) $(LEGACY) $(LOWEST) build .pytest_cache
