# Loyalty checks: everything runs from a local virtualenv (.venv) with pinned packages.
#   make demo     run the three check DAGs on an embedded demo platform, show notifications
#   make test     run the test suite (embedded PostgreSQL; LOYALTY_PG_URI=... for another server),
#                 including the end-to-end runs under a real scheduler (Celery's skips without Redis)
#   make test-e2e only those (LocalExecutor and CeleryExecutor, PostgreSQL metadata)
#   make test-console the alert console only (real api-server, headless Chromium); make screenshots
#                 also refreshes docs/img/console-*.png
#   make check-tests  the checks' YAML tests only (tests/checks/, python -m loyalty_checks.testing)
#   make demo-ui  the Airflow UI on the demo, DAGs scheduled (airflow standalone)
#   make lint     ruff, including its security (bandit) rules
#   make bench SCALE=1   the benchmark (docs/performance.md); make bench-data SCALE=… the data only
#   make bench-console   the alert console with 10,000 firing entities (docs/performance-console.md)
#   make bench-faults    fault -> error page times through a black-holing proxy (docs/reliability.md; part of bench)
#   make bench-cost      CPU of one scheduled P0 run under a real scheduler at 2, 50, 200 checks (docs/performance.md)
#   make bench-baseline  thresholds learned from history on generated data: false alarms, recall, time (docs/performance.md)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ONPATH := $(VENV)/.plugins-on-path

SCALE ?= 0.01
RUNS  ?= 5
BENCH_DSN ?= $(or $(LOYALTY_PG_URI),postgresql://postgres@127.0.0.1:5432/postgres)
# The committed figures are those of the large tenant; other scales report under .bench/.
BENCH_OUT ?= $(if $(filter 1 1.0,$(SCALE)),docs/performance.md,.bench/performance-$(SCALE).md)

.PHONY: demo demo-ui test test-e2e test-console bench-console screenshots check-tests lint bench bench-data bench-faults bench-cost bench-baseline clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

# plugins/ on the virtualenv's import path, as Airflow has it: .venv/bin/python -m loyalty_checks.testing
$(ONPATH): $(STAMP)
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "loyalty_checks_plugins.pth").write_text(str(pathlib.Path("plugins").resolve()) + "\n")'
	@touch $(ONPATH)

demo: $(STAMP)
	$(PY) -m demo.run

demo-ui: $(STAMP)
	$(PY) -m demo.ui

test: $(STAMP) $(ONPATH)
	$(PY) -m pytest -q

check-tests: $(STAMP) $(ONPATH)
	$(PY) -m loyalty_checks.testing tests/checks

test-e2e: $(STAMP)
	$(PY) -m pytest -q -m e2e tests/e2e

test-console: $(STAMP)
	$(PY) -m pytest -q tests/console

bench-console: $(STAMP)
	$(PY) -m bench.console --output docs/performance-console.md

screenshots: $(STAMP)
	LOYALTY_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/console/test_console_browser.py

bench-data: $(STAMP)
	$(PY) -m bench.generate --dsn '$(BENCH_DSN)' --scale $(SCALE) --replace

bench: $(STAMP)
	@mkdir -p .bench
	$(PY) -m bench.run --scale $(SCALE) --runs $(RUNS) --output $(BENCH_OUT) $(BENCH_ARGS)
	$(PY) -m bench.faults

bench-faults: $(STAMP)
	$(PY) -m bench.faults $(FAULTS_ARGS)

# About 30 minutes: each size waits for a 5-minute boundary, twice (a quiet run, then every check firing).
bench-cost: $(STAMP)
	$(PY) -m bench.cost --output docs/performance.md $(COST_ARGS)

# About 30 seconds: the headline seed and four others, a week of hourly judging each.
bench-baseline: $(STAMP)
	$(PY) -m bench.baseline --output docs/performance.md $(BASELINE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache
