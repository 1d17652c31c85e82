# Two commands set a fresh machine up: `make app` runs the app, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The MongoDB-wire test server (secantusdb, GPL): its own environment, a test tool only.
SECANTUS_VENV ?= .venv-secantus

.PHONY: setup setup-test-server app test lint bench bench-api gpu-prep lite

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

setup-test-server: $(SECANTUS_VENV)/.installed

$(SECANTUS_VENV)/.installed: tests/requirements-secantus.txt
	$(PYTHON) -m venv $(SECANTUS_VENV)
	$(SECANTUS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SECANTUS_VENV)/bin/python -m pip install --quiet -r tests/requirements-secantus.txt
	touch $@

app: setup
	$(PY) -m streamlit run streamlit_app.py

test: setup setup-test-server
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements.txt
	$(PY) -m benchmarks

bench-api: setup
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements.txt
	$(PY) -m benchmarks.api_load

# A model's LiteRT file (what is served), checked on FER2013 val and recorded in its card:
#   make lite MODEL=models/NAME.keras   (default: the newest card in models/, the shipped model)
lite: setup
	$(PY) -m facexpr export $(or $(MODEL),$(shell $(PY) -c 'from facexpr.model.classifier import newest_model; print(newest_model())')) --val-data $(FER2013)/val

# What one training run on a GPU machine carries (README, Training on a GPU): the packed data and
# the wheels that machine lacks, both in the ignored data/.
FER2013 ?= ../shared/data/fer2013
gpu-prep: setup
	$(PY) -m facexpr pack --data $(FER2013) --ferplus $(FER2013)/ferplus_labels.csv --out data/fer2013.npz
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d data/whl -r requirements-gpu.txt
