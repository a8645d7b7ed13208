# Loyalty checks: everything runs from a local virtualenv (.venv) with pinned packages.
#   make demo     run the three check DAGs on an embedded demo platform, show notifications
#   make test     run the test suite (embedded PostgreSQL; LOYALTY_PG_URI=... for another server)
#   make demo-ui  the Airflow UI on the demo, DAGs scheduled (airflow standalone)
#   make lint     ruff, including its security (bandit) rules

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-ui test lint clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .demo .pytest_cache
