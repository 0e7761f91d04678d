# Two entry points: `make demo` (IdP + demo app on SQLite) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test install install-test system-deps lint translations clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	cd tests/e2e/node_rp && npm ci --no-audit --no-fund --loglevel=error

system-deps:
	sh scripts/install-system-deps.sh

demo: install
	IDP_ENV=development $(BIN)/idp demo

test: system-deps install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -o idp/translations/messages.pot .
	$(BIN)/pybabel update -i idp/translations/messages.pot -d idp/translations -D messages --width 100
	$(BIN)/pybabel compile -d idp/translations -D messages

clean:
	rm -rf $(VENV) instance .pytest_cache
