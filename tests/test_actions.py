"""Acting on an alert (actions.py) on a real PostgreSQL, PagerDuty over real HTTP at a
local server: acknowledge (once, only while firing, PagerDuty told, nothing applied when it
cannot be), its effect on the lifecycle (no reminder, no escalation; cleared on resolve),
and a silence from Slack."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from loyalty_checks import actions, lifecycle
from loyalty_checks.catalog import catalog
from loyalty_checks.evaluate import Evaluation
from loyalty_checks.pipeline import settle
from loyalty_checks.store import actions as stored
from loyalty_checks.store import ensure_schema
from loyalty_checks.store.alerts import AlertStore, RunRef
from tests.conftest import ROUTING_KEY
from tests.sql.rows import H, T

P0 = catalog().check("expiration_task_stale")          # pages
P1 = catalog().check("rate_limit_spikes")              # warns on Slack


@pytest.fixture
def mon(pg, loyalty_db, airflow_conns):
    with psycopg.connect(pg.conninfo(loyalty_db), autocommit=True) as conn:
        ensure_schema(conn)
        yield conn


def fire(conn, check, t=T, value=200.0):
    entities = [{"id": "10", "name": "Store 10", "value": value}] if check.entity else []
    outcome = Evaluation(check.id, "firing", None if check.entity else value, check.threshold, check.comparison,
                         entities=entities, entities_total=len(entities), all_entities=entities)
    return settle(check, outcome, t, AlertStore(conn, RunRef("d", f"r{t.isoformat()}", t)))


def state(conn, check):
    row = conn.execute("SELECT lifecycle FROM loyalty_monitoring.check_state WHERE check_id = %s",
                       (check.id,)).fetchone()
    return lifecycle.CheckState.from_json(row[0])


def test_acknowledge_a_paging_check_tells_pagerduty_once(mon, sink):
    fire(mon, P0)
    sink.take()
    done = actions.acknowledge(mon, P0, "slack:U1", "slack", dedup_key="slack:1.5:U1")
    assert done.status == actions.APPLIED and done.acknowledged_by == "slack:U1"
    [ack] = [r["body"] for r in sink.take("/pagerduty")]
    assert ack == {"event_action": "acknowledge", "dedup_key": "loyalty/expiration_task_stale",
                   "routing_key": ROUTING_KEY,
                   "payload": {"summary": "[P0] expiration_task_stale: acknowledged by slack:U1", "severity": "info",
                               "source": "loyalty_db"}}
    assert state(mon, P0).acknowledged_by == "slack:U1"
    again = actions.acknowledge(mon, P0, "slack:U1", "slack", dedup_key="slack:1.5:U1")  # redelivered
    assert again.status == actions.DUPLICATE
    other = actions.acknowledge(mon, P0, "slack:U2", "slack", dedup_key="slack:2.5:U2")
    assert other.status == actions.ALREADY and other.acknowledged_by == "slack:U1"
    assert sink.requests == []
    assert [a["action"] for a in stored.actions_of(mon, P0.id, T - H)] == ["ack", "ack"]


def test_acknowledge_applies_nothing_when_pagerduty_cannot_be_reached(mon, sink):
    fire(mon, P0)
    sink.take()
    sink.fail("/pagerduty", 400, times=1)  # refused for good: no retry
    with pytest.raises(Exception, match="HTTP 400"):
        actions.acknowledge(mon, P0, "slack:U1", "slack", dedup_key="slack:1.5:U1")
    assert state(mon, P0).acknowledged_by is None
    assert stored.actions_of(mon, P0.id, T - H) == []
    assert actions.acknowledge(mon, P0, "slack:U1", "slack", dedup_key="slack:1.5:U1").status == actions.APPLIED


def test_a_check_that_does_not_fire_cannot_be_acknowledged(mon, sink):
    assert actions.acknowledge(mon, P1, "console:admin", "console").status == actions.NOT_FIRING
    assert sink.requests == []


def test_acknowledged_no_reminder_no_escalation_and_resolve_clears_it(mon, sink):
    check = P1.model_copy(update={"repeat_after": dt.timedelta(hours=1), "escalate_after": dt.timedelta(hours=2)})
    assert [n.event for n in fire(mon, check).notifications] == ["trigger"]
    assert actions.acknowledge(mon, check, "console:admin", "console").status == actions.APPLIED
    assert sink.take("/pagerduty") == []  # a Slack-only check: nobody was paged, nobody to tell
    for hours in (1, 2, 3):  # past repeat_after and escalate_after: nothing while acknowledged
        assert fire(mon, check, T + hours * H).notifications == []
    ok = Evaluation(check.id, "ok", None, check.threshold, check.comparison)
    [resolve] = settle(check, ok, T + 4 * H, AlertStore(mon, RunRef("d", "r4", T + 4 * H))).notifications
    assert resolve.event == "resolve" and resolve.acknowledged["by"] == "console:admin"
    assert state(mon, check).acknowledged_by is None
    [trigger] = fire(mon, check, T + 5 * H).notifications  # a new episode starts unacknowledged
    assert trigger.event == "trigger" and trigger.acknowledged is None


def test_silence_from_slack(mon):
    fire(mon, P1)
    done = actions.silence(mon, P1, 4, "slack:U1", "slack", dedup_key="slack:3.5:U1")
    assert done.status == actions.APPLIED
    assert done.silence["author"] == "slack:U1" and done.silence["reason"] == "from Slack"
    assert done.silence["ends_at"] - done.silence["starts_at"] == dt.timedelta(hours=4)
    assert actions.silence(mon, P1, 4, "slack:U1", "slack", dedup_key="slack:3.5:U1").status == actions.DUPLICATE
    count = mon.execute("SELECT count(*) FROM loyalty_monitoring.silences").fetchone()[0]
    assert count == 1


def test_silence_from_slack_only_while_the_check_fires(mon):
    assert actions.silence(mon, P1, 1, "slack:U1", "slack").status == actions.NOT_FIRING
    assert mon.execute("SELECT count(*) FROM loyalty_monitoring.silences").fetchone()[0] == 0
