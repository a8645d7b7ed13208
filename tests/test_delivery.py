"""Delivery under concurrency and crashes, on a real PostgreSQL and over real HTTP:
two workers sending the same notification deliver it once; a worker killed in the
middle of sending leaves it to the retry, which sends it (at least once)."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

from loyalty_checks.catalog import catalog
from loyalty_checks.messages import Notice
from loyalty_checks.pipeline import deliver as send_once
from loyalty_checks.store import ensure_schema
from loyalty_checks.store.alerts import claim_notification, sending
from tests.sql.rows import T

CHECK = catalog().check("rate_limit_spikes")


@pytest.fixture
def notice():
    note = {"event": "trigger", "channels": ["slack"], "new": [], "recovered": [],
            "firing": [{"id": "1", "name": "Store 1", "value": 150.0}], "firing_since": T.isoformat()}
    return Notice(check=CHECK, event="trigger", t=T, evaluation={"value": 150.0}, dag_id="loyalty_p1_checks",
                  run_url="http://af/run", runbook_url=catalog().runbook_link(CHECK.id), entity_cap=10, decided=note)


@pytest.fixture
def slack_to_sink(sink, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_LOYALTY_ALERTS", json.dumps(
        {"conn_type": "slackwebhook", "password": f"{sink.url}/slack/alerts"}))


@pytest.fixture
def connect(pg, loyalty_db):
    opened = []

    def make():
        conn = psycopg.connect(pg.conninfo(loyalty_db), autocommit=True)
        ensure_schema(conn)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


def test_two_workers_sending_the_same_notification_deliver_it_once(connect, notice, sink, slack_to_sink):
    sink.fail("/slack", 200, delay=1.0)  # the first delivery is slow: the second worker arrives meanwhile
    results, errors = [], []

    def worker():
        try:
            results.append(send_once(connect(), notice, "slack", "run_1"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [False, True]
    assert len([a for a in sink.attempts if a["path"] == "/slack/alerts"]) == 1


def test_a_worker_killed_while_sending_leaves_it_to_the_retry(connect, notice, sink, slack_to_sink):
    dying = connect()
    key = (CHECK.id, T, "trigger", "slack")
    sending(dying, *key).__enter__()  # holds the sending lock (no __exit__: the worker dies)
    assert claim_notification(dying, *key, "run_1")
    dying.close()  # killed before it could send or record anything: its lock goes with it
    assert send_once(connect(), notice, "slack", "run_1") is True
    assert len(sink.take("/slack")) == 1
    assert send_once(connect(), notice, "slack", "run_1") is False  # and only once more
