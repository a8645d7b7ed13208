"""Fault matrix: each fault injected for real (a refusing, slow or killed database, a Slack
or PagerDuty answering 429/5xx/400 or too slowly), and exactly which notifications
arrived afterwards — none lost, none doubled — and what the state recorded.
docs/reliability.md lists the matrix with the test of each row.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG
from tests.sql.rows import MIN, H, T
from tests.test_dag_runs import P0, bodies, expire_points_success, google_runs, p0_error_keys

STALE_PAGE = "loyalty/expiration_task_stale"


@pytest.fixture
def stale(db):
    """expiration_task_stale fires at T; google_wallet_down is healthy."""
    expire_points_success(db, T - 31 * H, "stale")
    google_runs(db, 0.1, 0.1)


def pages(sink):
    return [(b["event_action"], b["dedup_key"]) for b in bodies(sink, "/pagerduty")]


# ---------------------------------------------------------------- Slack faults

def test_slack_429_with_retry_after_then_500_is_delivered_once(stale, run_dag, sink):
    sink.fail("/slack", 429, headers={"Retry-After": "1"})
    sink.fail("/slack", 500)
    dr, states = run_dag(P0, T)
    assert dr.state == "success"
    assert [a["status"] for a in sink.attempts if a["path"].startswith("/slack")] == [429, 500, 200]
    assert len(bodies(sink, "/slack")) == 1 and pages(sink) == [("trigger", STALE_PAGE)]


def test_slack_timeout_is_retried(stale, run_dag, sink, monkeypatch, tmp_path):
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["dags"]["P0"]["http_timeout"] = "1s"  # the catalog's HTTP timeout, per request
    (tmp_path / "checks.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(tmp_path / "checks.yaml"))
    sink.fail("/slack", 200, delay=2.5)  # answers after the client gave up
    dr, _ = run_dag(P0, T)
    assert dr.state == "success"
    statuses = [a["status"] for a in sink.attempts if a["path"].startswith("/slack")]
    assert len(statuses) == 2 and len(bodies(sink, "/slack")) == 1


def test_slack_down_for_good_does_not_stop_the_page(stale, run_dag, sink, db):
    sink.fail("/slack", 503, times=50)
    dr, states = run_dag(P0, T)
    assert dr.state == "failed"  # red: a notification could not be delivered
    assert states["expiration_task_stale.notify_slack"] == "failed"
    assert states["expiration_task_stale.notify_pagerduty"] == "success"
    assert pages(sink) == [("trigger", STALE_PAGE)]
    sent_at, error = db.execute("SELECT sent_at, last_error FROM loyalty_monitoring.notifications"
                                " WHERE channel = 'slack'").fetchone()
    assert sent_at is None and "503" in error

    sink.faults.clear()  # Slack is back: the retry of the same run delivers it, once
    dr, _ = run_dag(P0, T)
    assert len(bodies(sink, "/slack")) == 1 and pages(sink) == []


# ---------------------------------------------------------------- PagerDuty faults

def test_pagerduty_429_and_5xx_are_retried_and_delivered_once(stale, run_dag, sink):
    sink.fail("/pagerduty", 429)
    sink.fail("/pagerduty", 502)
    dr, _ = run_dag(P0, T)
    assert dr.state == "success"
    attempts = [a for a in sink.attempts if a["path"].startswith("/pagerduty")]
    assert [a["status"] for a in attempts] == [429, 502, 200]
    assert {a["body"]["dedup_key"] for a in attempts} == {STALE_PAGE}
    assert pages(sink) == [("trigger", STALE_PAGE)]


def test_pagerduty_400_is_not_retried_and_is_reported(stale, run_dag, sink, db):
    sink.fail("/pagerduty", 400)
    dr, states = run_dag(P0, T)
    assert dr.state == "failed"
    assert states["expiration_task_stale.notify_pagerduty"] == "failed"
    assert [a["status"] for a in sink.attempts if a["path"].startswith("/pagerduty")] == [400]
    error = db.execute("SELECT last_error FROM loyalty_monitoring.notifications"
                       " WHERE channel = 'pagerduty'").fetchone()[0]
    assert "400" in error
    assert len(bodies(sink, "/slack")) == 1  # the Slack message still went out


# ---------------------------------------------------------------- database faults

@pytest.fixture
def short_timeout(tmp_path, monkeypatch):
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    for check in data["checks"]:
        if check["id"] == "expiration_task_stale":
            check["statement_timeout"] = "1s"
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))


@pytest.fixture
def locked_celery_table(pg, loyalty_db):
    """Another session holds an exclusive lock: the check's query waits on it."""
    conn = psycopg.connect(pg.conninfo(loyalty_db))
    conn.execute("LOCK TABLE celery_taskmeta IN ACCESS EXCLUSIVE MODE")
    yield
    conn.rollback()
    conn.close()


def test_slow_past_the_statement_timeout_reports_an_error_once(stale, short_timeout, run_dag, sink, pg, loyalty_db):
    with psycopg.connect(pg.conninfo(loyalty_db)) as blocker:
        blocker.execute("LOCK TABLE celery_taskmeta IN ACCESS EXCLUSIVE MODE")
        dr, states = run_dag(P0, T)
        blocker.rollback()
    assert dr.state == "failed"
    assert states["expiration_task_stale.measure"] == "failed"
    [page] = bodies(sink, "/pagerduty")
    assert page["dedup_key"] == f"{STALE_PAGE}/error"
    assert "statement timeout" in page["payload"]["custom_details"]["error"]
    assert len(bodies(sink, "/slack")) == 1

    dr, _ = run_dag(P0, T + 5 * MIN)  # fast again: the error resolves, the alert triggers, once each
    assert sorted(pages(sink)) == [("resolve", f"{STALE_PAGE}/error"), ("trigger", STALE_PAGE)]


def test_connection_dropped_mid_query_is_reported(stale, run_dag, sink, pg, loyalty_db, locked_celery_table):
    stop = threading.Event()

    def kill_the_check():
        with psycopg.connect(pg.conninfo(loyalty_db), autocommit=True) as admin:
            while not stop.is_set():
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'loyalty_checks:expiration_task_stale'").fetchall()
                if killed:
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_the_check)
    killer.start()
    try:
        dr, states = run_dag(P0, T)
    finally:
        stop.set()
        killer.join()
    assert states["expiration_task_stale.measure"] == "failed"
    [page] = bodies(sink, "/pagerduty")
    assert page["dedup_key"] == f"{STALE_PAGE}/error"
    assert "terminat" in page["payload"]["custom_details"]["error"]


def test_monitoring_db_unreachable_fails_open_and_does_not_page_twice(stale, run_dag, sink, monkeypatch, pg,
                                                                      loyalty_db):
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_MONITORING_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "x", "schema": "x"}))
    dr, states = run_dag(P0, T)
    assert states["expiration_task_stale.notify_pagerduty"] == "success"
    assert pages(sink) == [("trigger", STALE_PAGE)]  # paged although the state is unreachable
    assert bodies(sink, "/slack") == []
    # Not firing: nothing to page, the run is red; report_error knows only the state failed and says nothing.
    assert (states["google_wallet_down.measure"], states["google_wallet_down.report_error"]) == ("failed", "skipped")
    assert dr.state == "failed"
    dr, states = run_dag(P0, T + 2 * MIN)  # still blind, still firing: paged already
    assert states["expiration_task_stale.notify_pagerduty"] == "skipped" and sink.requests == []

    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_MONITORING_DB", pg.airflow_conn(loyalty_db))
    dr, _ = run_dag(P0, T + 5 * MIN)  # the state is back: Slack learns of it, PagerDuty is not paged again
    assert dr.state == "success"
    assert pages(sink) == []
    [slack] = bodies(sink, "/slack")
    assert slack["text"].startswith("[P0] FIRING")
    dr, _ = run_dag(P0, T + 10 * MIN)
    assert sink.requests == []


def test_monitoring_db_unreachable_and_healthy_pages_nobody(db, run_dag, sink, monkeypatch):
    expire_points_success(db, T - H, "fresh")
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_MONITORING_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "x", "schema": "x"}))
    dr, states = run_dag(P0, T)
    assert dr.state == "failed" and states["expiration_task_stale.measure"] == "failed"
    assert states["expiration_task_stale.report_error"] == "skipped"  # measured: nothing to report
    assert sink.requests == []


def test_both_databases_down_report_the_error_once_and_resolve_it(db, run_dag, sink, monkeypatch, pg, loyalty_db):
    expire_points_success(db, T - H, "fresh")
    google_runs(db, 0.1, 0.1)
    nowhere = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "x", "schema": "x"})
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", nowhere)
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_MONITORING_DB", nowhere)
    run_dag(P0, T)
    every_p0 = p0_error_keys("loyalty_db", "loyalty_monitoring_db")
    assert sorted(pages(sink)) == [("trigger", key) for key in every_p0]
    assert len(bodies(sink, "/slack")) == len(every_p0)
    run_dag(P0, T + 5 * MIN)  # still down: reported already
    assert sink.requests == []

    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", pg.airflow_conn(loyalty_db))
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_MONITORING_DB", pg.airflow_conn(loyalty_db))
    dr, _ = run_dag(P0, T + 10 * MIN)  # both back, healthy: each error incident resolves, nothing else
    assert dr.state == "success"
    assert sorted(pages(sink)) == [("resolve", key) for key in every_p0]
    assert all(b["text"].startswith("[P0] CHECK RUNS AGAIN") for b in bodies(sink, "/slack"))
    assert sink.requests == []
