# Two commands do all set-up on a fresh machine:
#   make run   - venv, install, database upgrade, start the node (SQLite, flows in-process)
#   make test  - the same set-up plus the test peers (DCMTK, Orthanc, dicom3tools, dcmqi), then pytest
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: run test lint bench install install-test peers postgres clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

install: $(STAMP)

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	touch $@

install-test: $(TEST_STAMP) peers postgres

run: install
	$(VENV)/bin/dicom-node db upgrade
	$(VENV)/bin/dicom-node serve

# Debian peers the tests talk to; installed when missing and we are root (CI, fresh machines).
peers:
	@missing=""; \
	command -v storescu >/dev/null || missing="$$missing dcmtk"; \
	command -v Orthanc >/dev/null || missing="$$missing orthanc"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing test peers:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing test peers:$$missing (install them: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

# PostgreSQL for the database tests: start the local cluster if it is installed but stopped.
postgres:
	@if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
	  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || true; \
	  fi; \
	fi; \
	pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || echo "PostgreSQL is not reachable on 127.0.0.1:5432: the PostgreSQL tests will fail (set DICOM_NODE_TEST_POSTGRES_URL to use another server)"

lint: install-test
	$(VENV)/bin/ruff check dicom_node tests bench models
	$(VENV)/bin/mypy

test: install-test lint
	$(VENV)/bin/python -m pytest -q -ra $(PYTEST_ARGS)

bench: install-test
	$(PIP) install --quiet deepbet  # the segmentation peer; its weights ship in the wheel
	$(VENV)/bin/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache
