# Two entry points: `make demo` (IdP + demo app on SQLite) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
MUTMUT_ARGS ?=
MUTATION_JOBS ?= 2

.PHONY: bench demo test install install-test install-mutation mutation system-deps lint translations screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	cd tests/e2e/node_rp && npm ci --no-audit --no-fund --loglevel=error
	cd tests/e2e/axe && npm ci --no-audit --no-fund --loglevel=error

system-deps:
	sh scripts/install-system-deps.sh

demo: install
	IDP_ENV=development $(BIN)/idp demo

test: system-deps install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# By hand only, never from `make test` or CI: slow (see docs/mutation-testing.md).
# One module: make mutation MUTMUT_ARGS='"idp.challenges*"'
install-mutation: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

mutation: install-mutation
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTMUT_ARGS)
	$(BIN)/python scripts/mutation_summary.py --survivors

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -o idp/translations/messages.pot .
	$(BIN)/pybabel update -i idp/translations/messages.pot -d idp/translations -D messages --width 100
	$(BIN)/pybabel compile -d idp/translations -D messages

# The README's screenshots (docs/screenshots/): a real IdP and demo app, Chromium in French.
# Needs Chromium (/usr/bin/chromium, see `make system-deps`).
screenshots: install
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python scripts/screenshots.py --out docs/screenshots

# By hand only, never from `make test`: this IdP against bench/reference.py and the Node.js
# oidc-provider peer, on loopback, a few minutes (BENCH_ARGS=--quick: about two).
# Needs PostgreSQL on 127.0.0.1:5432, Redis (db 5) and Node.js; writes bench/results/.
BENCH_ARGS ?=
bench: install-test
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache mutants
