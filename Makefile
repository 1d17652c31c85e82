# Two commands set a fresh machine up: `make app` runs the app, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup app test lint bench bench-api

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

app: setup
	$(PY) -m streamlit run streamlit_app.py

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements.txt
	$(PY) -m benchmarks

bench-api: setup
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements.txt
	$(PY) -m benchmarks.api_load
