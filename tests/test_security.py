"""Secrets and personal data stay where they belong: the Slack webhook URL and the
PagerDuty routing key never appear in task logs, XComs, rendered templates or message
content; no e-mail address reaches a notification, an XCom or the results tables.
Bad SQL results give errors that name the check and the file."""

from __future__ import annotations

import json

import pytest

from loyalty_checks.catalog import catalog
from loyalty_checks.measure import CheckSqlError, shape_rows
from tests.sql.rows import MIN, H, T, card, emails, merchant, program, store
from tests.test_dag_runs import P0, P1, expire_points_success

WEBHOOK_SECRET = "T0SECRET/B0SECRET/XoXoWebhookSecret42"
ROUTING_SECRET = "R0utingKeySecret0000000000000042"


@pytest.fixture
def secret_conns(monkeypatch, sink):
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_LOYALTY_ALERTS", json.dumps(
        {"conn_type": "slackwebhook", "password": f"{sink.url}/services/{WEBHOOK_SECRET}"}))
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_LOYALTY", json.dumps(
        {"conn_type": "pagerduty_events", "password": ROUTING_SECRET,
         "extra": {"events_api_url": f"{sink.url}/pagerduty"}}))


def _airflow_rows(dag_id: str) -> str:
    """Every XCom value and rendered template field Airflow stored for the DAG, as text."""
    from airflow.settings import Session
    from sqlalchemy import text

    with Session() as session:
        xcoms = session.execute(text("SELECT value FROM xcom WHERE dag_id = :d"), {"d": dag_id}).fetchall()
        rendered = session.execute(text("SELECT rendered_fields FROM rendered_task_instance_fields"
                                        " WHERE dag_id = :d"), {"d": dag_id}).fetchall()
    return json.dumps([str(r[0]) for r in xcoms + rendered])


def airflow_dags_test(dag_id: str, t) -> str:
    """`airflow dags test` as an operator runs it, with INFO logs; returns everything it printed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    out = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", dag_id, t.isoformat()], env=env,
                         capture_output=True, text=True, timeout=300)
    return out.stdout + out.stderr


def test_secrets_never_leak_into_logs_xcoms_templates_or_messages(db, airflow_db, airflow_conns, sink,
                                                                 secret_conns):
    expire_points_success(db, T - 31 * H, "stale")
    logs = airflow_dags_test(P0, T)
    assert "slack trigger of expiration_task_stale sent" in logs and "PagerDuty trigger sent" in logs  # task logs
    for secret in (WEBHOOK_SECRET, "XoXoWebhookSecret42", ROUTING_SECRET):
        assert secret not in logs, "a secret reached the task logs"
        assert secret not in _airflow_rows(P0), "a secret reached an XCom or a rendered template"
    [page] = [r["body"] for r in sink.requests if r["path"].startswith("/pagerduty")]
    assert page.pop("routing_key") == ROUTING_SECRET  # the API needs it in the request, nowhere else
    slack = [r["body"] for r in sink.requests if r["path"].startswith("/services")]
    assert len(slack) == 1
    for secret in (WEBHOOK_SECRET, ROUTING_SECRET):
        assert secret not in json.dumps([page, slack])


def test_no_personal_data_in_notifications_xcoms_or_results(db, airflow_db, airflow_conns, sink):
    secret = "jane.doe.private@example.com"
    merchant(db, 1, "Acme")
    store(db, 10, 1)
    program(db, 1, 1)
    card(db, 1, 1, 1, T - 400 * H, customer_email=secret)
    emails(db, 50, "failed", T - 1 * H, recipient=secret)
    emails(db, 50, "delivered", T - 1 * H, recipient=secret)
    logs = airflow_dags_test(P1, T)
    assert "slack trigger of email_failure_rate sent" in logs
    everything = json.dumps(sink.requests) + _airflow_rows(P1) + logs
    everything += json.dumps(db.execute("SELECT to_jsonb(e) FROM loyalty_monitoring.evaluations e").fetchall(),
                             default=str)
    assert secret not in everything and "jane.doe" not in everything


# ---------------------------------------------------------------- bad SQL results

CHECK = catalog().check("rate_limit_spikes")
SCALAR = catalog().check("email_failure_rate")


@pytest.mark.parametrize("check,columns,rows,message", [
    (CHECK, ["store", "value"], [], "lacks column 'entity_id'"),
    (SCALAR, ["ratio"], [(0.1,)], "lacks column 'value'"),
    (SCALAR, ["value"], [(0.1,), (0.2,)], "expected at most one row, got 2"),
    (SCALAR, ["value"], [("high",)], "column 'value' must be numeric, got str 'high'"),
    (CHECK, ["entity_id", "entity_name", "value"], [(None, "x", 1)], "column 'entity_id' must not be NULL"),
    (CHECK, ["entity_id", "entity_name", "value"], [(1, "x", True)], "column 'value' must be numeric, got bool"),
    (SCALAR, ["value", "blob"], [(0.1, b"\x00")], "binary columns are not allowed"),
])
def test_bad_results_name_the_check_and_the_file(check, columns, rows, message):
    with pytest.raises(CheckSqlError) as err:
        shape_rows(check, columns, rows)
    assert message in str(err.value)
    if "binary" not in message:
        assert f"check {check.id!r} ({check.sql_path})" in str(err.value)


def test_null_and_no_rows_are_no_data_not_errors():
    assert shape_rows(SCALAR, ["value"], [])["value"] is None
    assert shape_rows(SCALAR, ["value"], [(None,)])["value"] is None
    assert shape_rows(CHECK, ["entity_id", "entity_name", "value"], [(1, "a", None)])["entities"] == []


def test_a_broken_check_sql_fails_its_task_with_the_check_and_file(db, airflow_db, airflow_conns, sink, tmp_path,
                                                                   monkeypatch):
    """A SQL file returning the wrong columns: measure fails (red), report_error names it."""
    import yaml

    from loyalty_checks.catalog import DEFAULT_CATALOG, SQL_DIR

    bad = SQL_DIR / "p0" / "_test_wrong_columns.sql"
    bad.write_text("SELECT 1 AS hours -- wrong column name\n")
    try:
        data = yaml.safe_load(DEFAULT_CATALOG.read_text())
        data["checks"][0]["sql"] = "p0/_test_wrong_columns.sql"
        path = tmp_path / "checks.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=str(SQL_DIR.parents[1] / "dags" / "loyalty_p0_checks.py")).dags[P0]
        for task in dag.tasks:
            task.retries = 0
        dr = dag.test(logical_date=T + 5 * MIN)
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    finally:
        bad.unlink()
    assert states["expiration_task_stale.measure"] == "failed"
    [page] = [r["body"] for r in sink.requests if r["path"].startswith("/pagerduty")]
    error = page["payload"]["custom_details"]["error"]
    assert "CheckSqlError: check 'expiration_task_stale'" in error and "_test_wrong_columns.sql" in error
    assert "lacks column 'value'" in error
