# Loyalty checks: everything runs from a local virtualenv (.venv) with pinned packages.
#   make demo     run the three check DAGs on an embedded demo platform, show notifications
#   make test     run the test suite (embedded PostgreSQL; LOYALTY_PG_URI=... for another server),
#                 including the end-to-end runs under a real scheduler (Celery's skips without Redis)
#   make test-e2e only those (LocalExecutor and CeleryExecutor, PostgreSQL metadata)
#   make demo-ui  the Airflow UI on the demo, DAGs scheduled (airflow standalone)
#   make lint     ruff, including its security (bandit) rules

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-ui test test-e2e lint clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo.run

demo-ui: $(STAMP)
	$(PY) -m demo.ui

test: $(STAMP)
	$(PY) -m pytest -q

test-e2e: $(STAMP)
	$(PY) -m pytest -q -m e2e tests/e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .demo .pytest_cache
