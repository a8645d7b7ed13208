"""Time budgets: a database or a service that hangs is reported within the same run.

Every fault goes through a real TCP proxy on 127.0.0.1 (tests/proxy.py) in front of the
real PostgreSQL or the local HTTP capture server: a link that goes silent in the middle of
a query (TCP stays open, nothing comes back), a server that accepts and never answers, a
monitoring database that goes silent inside the state write, a Slack or a PagerDuty that
accept and never answer. Each test asserts what arrived (error pages per check, no false
alert, the page not delayed by Slack) and bounds how long it took by the catalog's budget
(generously: these are bounds, not benchmarks; `python -m bench.faults` prints the figures).
Each bound has BUSY seconds more than the budget: on a busy 2-core machine (another test
suite running) dag.test's own work between the tasks is slower, while a guard that does
not work hangs until the run's timeout or for ever, far past any of these bounds.

The catalog of these tests is a copy of include/checks.yaml with short P0 numbers
(statement 2 s, connect 2 s, grace 1 s, HTTP 1 s); test_done_when.py runs the real one.
"""

from __future__ import annotations

import json
import os
import threading
import time

import psycopg
import pytest
import yaml

from loyalty_checks import budget, connections
from loyalty_checks.catalog import DEFAULT_CATALOG, catalog, load_catalog
from tests.proxy import TcpProxy, pg_conn_via, pg_upstream
from tests.sql.rows import H, T
from tests.test_dag_runs import P0, expire_points_success, google_runs

STALE, WALLET = "expiration_task_stale", "google_wallet_down"
# every P0 check on loyalty_db reports its own error: STALE and WALLET, and a site's own P0 checks
ERROR_PAGES = {f"loyalty/{c.id}/error" for c in load_catalog(DEFAULT_CATALOG).for_severity("P0")
               if c.source == "loyalty_db"}
SHORT_P0 = {"statement_timeout": "2s", "connect_timeout": "2s", "grace": "1s", "http_timeout": "1s",
            "retries": 0, "retry_delay": "1s", "run_timeout": "4m"}
BUSY = 10.0  # seconds a busy machine may add to a bound (see the module doc)
GONE_WITHIN = 60  # seconds for the server to end a cut session (3 s idle_in_transaction_session_timeout, when idle)


def record_timing(case: str, seconds: float) -> None:
    """bench/faults.py collects these (fault -> error page, seconds) when LOYALTY_FAULT_TIMINGS is set."""
    path = os.environ.get("LOYALTY_FAULT_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"case": case, "seconds": round(seconds, 2)}) + "\n")


@pytest.fixture
def short_budget(tmp_path, monkeypatch):
    """include/checks.yaml with short P0 time limits (LOYALTY_CHECKS_CATALOG)."""
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["dags"]["P0"].update(SHORT_P0)
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
    return catalog()


@pytest.fixture
def arrivals(sink):
    """(time, path, body) of every request the capture server received, as it arrived."""
    seen: list[tuple[float, str, dict]] = []
    sink.on_record = lambda r: seen.append((time.time(), r["path"], r["body"]))
    return seen


def pages(seen) -> list[tuple[float, str, str]]:
    return [(at, b["event_action"], b["dedup_key"]) for at, path, b in seen if path.startswith("/pagerduty")]


@pytest.fixture
def db_proxy(pg, monkeypatch):
    """A proxy in front of the test PostgreSQL (its Unix socket or host:port)."""
    connections.forget_schemas()
    proxy = TcpProxy(pg_upstream(pg)).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def loyalty_db_via(db_proxy, pg, loyalty_db, airflow_conns, monkeypatch):
    """loyalty_db through the proxy (the alert state stays direct)."""
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", pg_conn_via(db_proxy, pg, loyalty_db))
    return db_proxy


def partition_when_active(pg, dbname: str, proxy: TcpProxy, app_like: str, stop: threading.Event) -> threading.Thread:
    """Black-hole the proxy as soon as a backend named like `app_like` is running a query."""

    def watch():
        with psycopg.connect(pg.conninfo(dbname), autocommit=True) as admin:
            while not stop.is_set():
                if admin.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s"
                                 " AND state = 'active' AND pid <> pg_backend_pid()", (app_like,)).fetchone():
                    proxy.blackhole()
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def backends(pg, dbname: str, app_like: str) -> list:
    with psycopg.connect(pg.conninfo(dbname), autocommit=True) as admin:
        return admin.execute("SELECT pid, state FROM pg_stat_activity WHERE application_name LIKE %s"
                             " AND pid <> pg_backend_pid()", (app_like,)).fetchall()


def wait_until(condition, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


# ---------------------------------------------------------------- the connection itself

def test_a_connection_extra_may_tighten_the_limits_never_loosen_them():
    limits = budget.DbTimeouts(connect_timeout=5, statement_timeout=10, grace=3)
    assert connections.libpq_params(limits) == {
        "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 3, "keepalives_interval": 1,
        "keepalives_count": 3, "tcp_user_timeout": 13000}
    tightened = connections.libpq_params(limits, {"connect_timeout": "2", "tcp_user_timeout": 60000,
                                                  "keepalives_idle": 1, "keepalives": 0})
    assert tightened["connect_timeout"] == 2 and tightened["keepalives_idle"] == 1
    assert tightened["tcp_user_timeout"] == 13000 and tightened["keepalives"] == 1  # looser: ignored


def test_a_query_on_a_link_gone_silent_fails_within_statement_timeout_plus_grace(pg, loyalty_db, db_proxy,
                                                                                 monkeypatch):
    """The guard gives up, the server ends the query and the session by itself."""
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", pg_conn_via(db_proxy, pg, loyalty_db))
    limits = budget.DbTimeouts(connect_timeout=2, statement_timeout=2, grace=1)
    with psycopg.connect(pg.conninfo(loyalty_db), autocommit=True) as admin:
        with connections.postgres("loyalty_db", limits) as conn:
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout',"
                " 'idle_in_transaction_session_timeout', 'client_connection_check_interval')").fetchall())
            assert settings == {"statement_timeout": "2000", "idle_in_transaction_session_timeout": "3000",
                                "client_connection_check_interval": "1000"}
            conn.execute("SET application_name = 'loyalty_checks:guard_test'")
            conn.commit()
            started = time.monotonic()
            with pytest.raises(connections.DatabaseSilent, match="no answer"):
                threading.Timer(0.5, db_proxy.blackhole).start()
                conn.execute("SELECT pg_sleep(1.5), 1")  # the answer comes back to a proxy that swallows it
            took = time.monotonic() - started
        assert took < limits.answer_within + limits.cancel_within + BUSY, took
        record_timing("guard: query on a link gone silent fails (statement 2 s + grace 1 s)",
                      time.monotonic() - started - 0.5)
        # Nothing is left running on the server: the session ends by idle_in_transaction_session_timeout.
        assert wait_until(lambda: not backends(pg, loyalty_db, "loyalty_checks:guard_test"), GONE_WITHIN), \
            backends(pg, loyalty_db, "loyalty_checks:guard_test")
        admin.execute("SELECT 1")


def test_a_server_that_accepts_and_never_answers_fails_at_connect(pg, loyalty_db, monkeypatch):
    with TcpProxy(pg_upstream(pg), mode="blackhole") as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", pg_conn_via(proxy, pg, loyalty_db))
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="timeout"):
            with connections.postgres("loyalty_db", budget.DbTimeouts(connect_timeout=2, statement_timeout=5, grace=1)):
                pass
        assert time.monotonic() - started < 2 + BUSY
        record_timing("guard: server silent at connect fails (connect_timeout 2 s)", time.monotonic() - started)
        assert proxy.accepted == 1


# ---------------------------------------------------------------- the catalog's budget

def test_the_budget_is_checked_when_the_catalog_loads(tmp_path):
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["dags"]["P0"]["statement_timeout"] = "60s"
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ValueError) as err:
        load_catalog(path)
    message = str(err.value)
    assert "loyalty_p0_checks" in message and "'expiration_task_stale'" in message
    assert "run_timeout 4m45s" in message and "measure" in message and "report_error" in message

    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["dags"]["P0"]["run_timeout"] = "5m"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ValueError, match=r"run_timeout.*5 min must be shorter than the schedule's interval"):
        load_catalog(path)

    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["checks"][0]["connect_timeout"] = "2m"  # a check's own override counts too
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ValueError, match="'expiration_task_stale': the worst error path"):
        load_catalog(path)


def test_every_task_gets_its_budget_and_the_doc_shows_it(dagbag):
    cat = catalog()
    for severity in ("P0", "P1", "P2"):
        spec = cat.dags[severity]
        dag = dagbag.get_dag(spec.dag_id)
        b = budget.dag_budget(spec, cat.for_severity(severity))
        for check_id, tasks in b.tasks.items():
            measure = dag.get_task(f"{check_id}.measure")
            assert measure.execution_timeout == tasks["measure"].execution_timeout
            assert measure.retries == spec.retries
            assert dag.get_task(f"{check_id}.report_error").execution_timeout == tasks["report_error"].execution_timeout
        cid, _, worst = b.worst()
        assert worst <= spec.run_timeout < b.interval
        assert "Time budget" in dag.doc_md and f"{budget.fmt(worst)} of {budget.fmt(spec.run_timeout)}" in dag.doc_md
    p0 = budget.dag_budget(cat.dags["P0"], cat.for_severity("P0"))
    # The numbers docs/reliability.md explains.
    # The check's query (connect 5 + statement 5 + grace 3 + cancel 3 + grace 3) and the lifecycle's
    # record (connect 5 + state statement 5 + grace 3, + 2 × grace 3), in one task.
    assert p0.tasks[STALE]["measure"].execution_timeout.total_seconds() == 38
    assert p0.error_path(STALE).total_seconds() <= 285


# ---------------------------------------------------------------- loyalty_db silent, under dag.test()

@pytest.fixture
def healthy(db):
    expire_points_success(db, T - H, "fresh")
    google_runs(db, 0.1, 0.1)


def assert_error_pages_only(seen):
    got = pages(seen)
    assert {key for _, action, key in got if action == "trigger"} == ERROR_PAGES, got
    assert all(key.endswith("/error") for _, _, key in got), got  # no false alert
    return max(at for at, _, _ in got)


def test_partition_mid_query_reports_both_errors_within_the_budget(healthy, short_budget, loyalty_db_via, pg,
                                                                    loyalty_db, run_dag, arrivals):
    """The link goes silent while expiration_task_stale's query runs; then the second check's
    connection is black-holed at connect: both are reported, nothing else."""
    stop = threading.Event()
    with psycopg.connect(pg.conninfo(loyalty_db)) as blocker:  # keeps the query running long enough to cut it
        blocker.execute("LOCK TABLE celery_taskmeta, loyalty_wallet_sync_runs IN ACCESS EXCLUSIVE MODE")
        partition_when_active(pg, loyalty_db, loyalty_db_via, "loyalty_checks:%", stop)
        dr, states = run_dag(P0, T)
        blocker.rollback()
    stop.set()
    assert dr.state == "failed"
    assert states[f"{STALE}.measure"] == states[f"{WALLET}.measure"] == "failed"
    assert states[f"{STALE}.report_error"] == states[f"{WALLET}.report_error"] == "success"
    assert states["heartbeat_failed"] in ("success", "skipped")  # no heartbeat connection in tests
    last_page = assert_error_pages_only(arrivals)
    errors = {b["dedup_key"]: b["payload"]["custom_details"]["error"] for _, p, b in arrivals if p.startswith("/pagerduty")}
    # Whichever check ran first was cut mid-query; the other was never answered at connect.
    assert sorted("DatabaseSilent" in e for e in errors.values()) == [False, True], errors
    assert any("timeout" in e for e in errors.values() if "DatabaseSilent" not in e), errors
    assert loyalty_db_via.went_silent_at is not None
    spec = short_budget.dags["P0"]
    b = budget.dag_budget(spec, short_budget.for_severity("P0"))
    bound = sum(b.tasks[c]["measure"].worst.total_seconds() + b.tasks[c]["report_error"].worst.total_seconds()
                for c in (STALE, WALLET))
    assert last_page - loyalty_db_via.went_silent_at < bound + BUSY, (last_page - loyalty_db_via.went_silent_at, bound)
    record_timing("loyalty_db partition mid-query (both checks, dag.test)", last_page - loyalty_db_via.went_silent_at)
    # Nothing left running on the production database.
    assert wait_until(lambda: not backends(pg, loyalty_db, "loyalty_checks:%"), GONE_WITHIN), \
        backends(pg, loyalty_db, "loyalty_checks:%")


def test_silent_at_connect_reports_both_errors_within_the_budget(healthy, short_budget, loyalty_db_via, run_dag,
                                                                 arrivals):
    loyalty_db_via.blackhole()
    dr, states = run_dag(P0, T)
    assert dr.state == "failed" and states[f"{STALE}.measure"] == "failed"
    last_page = assert_error_pages_only(arrivals)
    errors = [b["payload"]["custom_details"]["error"] for _, p, b in arrivals if p.startswith("/pagerduty")]
    assert all("timeout" in e for e in errors), errors
    assert loyalty_db_via.accepted >= 2  # each check connected, and was never answered
    b = budget.dag_budget(short_budget.dags["P0"], short_budget.for_severity("P0"))
    bound = 2 * (b.tasks[STALE]["measure"].worst + b.tasks[STALE]["report_error"].worst).total_seconds()
    assert last_page - loyalty_db_via.went_silent_at < bound + BUSY
    record_timing("loyalty_db silent at connect (both checks, dag.test)", last_page - loyalty_db_via.went_silent_at)


# ---------------------------------------------------------------- the alert state goes silent

def test_monitoring_db_silent_mid_transaction_still_pages_the_firing_check(db, short_budget, db_proxy, pg, loyalty_db,
                                                                            run_dag, arrivals, monkeypatch):
    """expiration_task_stale fires; the monitoring database goes silent inside measure's state
    write: measure fails open and pages; the healthy check pages nobody; the run is red."""
    expire_points_success(db, T - 31 * H, "stale")
    google_runs(db, 0.1, 0.1)
    from loyalty_checks.store import ensure_schema

    ensure_schema(db)
    db.execute("INSERT INTO loyalty_monitoring.check_state (check_id) VALUES (%s), (%s) ON CONFLICT DO NOTHING",
               (STALE, WALLET))
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_MONITORING_DB", pg_conn_via(db_proxy, pg, loyalty_db))
    stop = threading.Event()
    with psycopg.connect(pg.conninfo(loyalty_db)) as locker:  # measure waits on the state row: mid-transaction
        locker.execute("SELECT 1 FROM loyalty_monitoring.check_state WHERE check_id = %s FOR UPDATE", (STALE,))

        def watch():
            with psycopg.connect(pg.conninfo(loyalty_db), autocommit=True) as admin:
                while not stop.is_set():
                    if admin.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                     " AND state = 'active' AND query ILIKE '%%check_state%%'").fetchone():
                        db_proxy.blackhole()
                        return
                    time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        dr, states = run_dag(P0, T)
        stop.set()
        locker.rollback()
    assert db_proxy.went_silent_at is not None, "the state write never reached the monitoring database"
    assert states[f"{STALE}.decide"] == "success" and states[f"{STALE}.notify_pagerduty"] == "success"
    got = pages(arrivals)
    assert [(a, k) for _, a, k in got] == [("trigger", f"loyalty/{STALE}")], got  # paged: fail open
    # The healthy check records its evaluation (if decided before the fault) or fails red; it pages
    # nobody: report_error knows that only the state failed (skipped), notify follows decide.
    assert (states[f"{WALLET}.measure"], states[f"{WALLET}.decide"], states[f"{WALLET}.report_error"]) in (
        ("success", "success", "skipped"), ("failed", "upstream_failed", "skipped"))
    assert states[f"{WALLET}.notify_pagerduty"] != "success"
    page_at = got[0][0]
    b = budget.dag_budget(short_budget.dags["P0"], short_budget.for_severity("P0"))
    bound = (b.tasks[STALE]["measure"].worst + b.tasks[STALE]["notify"].worst).total_seconds()
    assert page_at - db_proxy.went_silent_at < bound + BUSY
    record_timing("monitoring db silent mid-transaction (fail-open page, dag.test)", page_at - db_proxy.went_silent_at)


# ---------------------------------------------------------------- Slack or PagerDuty silent

@pytest.fixture
def http_proxy(sink):
    proxy = TcpProxy(("127.0.0.1", int(sink.url.rsplit(":", 1)[1])), mode="blackhole").start()
    yield proxy
    proxy.stop()


def slack_via(proxy, monkeypatch):
    for channel in ("alerts", "reports"):
        monkeypatch.setenv(f"AIRFLOW_CONN_SLACK_LOYALTY_{channel.upper()}", json.dumps(
            {"conn_type": "slackwebhook", "password": f"http://{proxy.address}/slack/{channel}"}))


def test_slack_silent_never_delays_the_page_of_an_error(short_budget, http_proxy, run_dag, arrivals, monkeypatch):
    """loyalty_db refuses; report_error pages first, then tries the silent Slack 3 times and
    gives up: the page went out before Slack was even tried."""
    slack_via(http_proxy, monkeypatch)
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "x", "schema": "x"}))
    started = time.time()
    dr, states = run_dag(P0, T)
    assert states[f"{STALE}.report_error"] == "failed"  # Slack could not be told: red
    got = pages(arrivals)
    assert {k for _, a, k in got if a == "trigger"} == ERROR_PAGES
    slack_tries = [at for at, what in http_proxy.events if what.startswith("accept")]
    assert len(slack_tries) == len(ERROR_PAGES) * budget.HTTP_ATTEMPTS  # each check: cut off by the timeout, retried
    first_page = min(at for at, _, _ in got)
    assert first_page < min(slack_tries), "the page waited for Slack"
    assert not [p for _, p, _ in arrivals if p.startswith("/slack")]
    record_timing("Slack silent: PagerDuty error page after the run started (dag.test)", first_page - started)


def test_slack_silent_on_a_firing_check_does_not_block_the_page(short_budget, http_proxy, db, run_dag, arrivals,
                                                                monkeypatch):
    expire_points_success(db, T - 31 * H, "stale")
    google_runs(db, 0.1, 0.1)
    slack_via(http_proxy, monkeypatch)
    started = time.time()
    dr, states = run_dag(P0, T)
    assert states[f"{STALE}.notify_pagerduty"] == "success" and states[f"{STALE}.notify_slack"] == "failed"
    assert [(a, k) for _, a, k in pages(arrivals)] == [("trigger", f"loyalty/{STALE}")]
    spec = short_budget.dags["P0"]
    tries = [at for at, what in http_proxy.events if what.startswith("accept")]
    assert len(tries) == budget.HTTP_ATTEMPTS
    assert tries[-1] - tries[0] < budget.send_seconds(spec) + BUSY  # cut off by the HTTP timeout, within the budget
    assert pages(arrivals)[0][0] - started < 60 + BUSY


def test_pagerduty_silent_is_cut_off_retried_and_reported_red(short_budget, http_proxy, db, run_dag, arrivals,
                                                              monkeypatch, pg, loyalty_db):
    expire_points_success(db, T - 31 * H, "stale")
    google_runs(db, 0.1, 0.1)
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_LOYALTY", json.dumps(
        {"conn_type": "pagerduty_events", "password": "test-routing-key-0123456789",
         "extra": {"events_api_url": f"http://{http_proxy.address}/pagerduty"}}))
    dr, states = run_dag(P0, T)
    assert states[f"{STALE}.notify_pagerduty"] == "failed" and states[f"{STALE}.notify_slack"] == "success"
    assert dr.state == "failed"
    tries = [at for at, what in http_proxy.events if what.startswith("accept")]
    assert len(tries) == budget.HTTP_ATTEMPTS
    assert tries[-1] - tries[0] < budget.send_seconds(short_budget.dags["P0"]) + BUSY
    error = db.execute("SELECT last_error FROM loyalty_monitoring.notifications WHERE channel = 'pagerduty'").fetchone()[0]
    assert "no success after 3 attempts" in error and "imed out" in error, error
    [slack] = [b for _, p, b in arrivals if p.startswith("/slack")]
    assert slack["text"].startswith("[P0] FIRING")
    record_timing("PagerDuty silent: notify_pagerduty gives up (3 attempts)",
                  tries[-1] - tries[0] + short_budget.dags["P0"].http_timeout.total_seconds())
