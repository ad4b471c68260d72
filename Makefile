# Two entry points for a new machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LEGACY := .venv-legacy
LEGACY_STAMP := $(LEGACY)/.installed

.PHONY: demo test test-legacy lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
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

lint: $(STAMP)
	$(BIN)/ruff check hfcache tests scripts

clean:
	rm -rf $(VENV) $(LEGACY) build .pytest_cache
