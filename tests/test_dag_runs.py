"""End to end: the DAGs run with dag.test() against a real PostgreSQL, and their
notifications arrive over HTTP at a local server standing in for Slack and PagerDuty.

Each scenario feeds rows, runs a DAG at successive times T and asserts exactly what was
sent: trigger -> still firing (nothing) -> resolve, errors, digest, reruns.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from loyalty_checks.catalog import catalog
from tests.conftest import ROUTING_KEY
from tests.sql.rows import MIN, H, T, insert, merchant, store

RUNBOOK = "https://github.com/loyalty-platform/loyalty-monitoring/blob/main/docs/runbooks.md"
P0 = "loyalty_p0_checks"
P1 = "loyalty_p1_checks"
P2 = "loyalty_p2_checks"


def run_url(dag_id: str, run_id: str) -> str:
    return f"http://localhost:8080/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def expire_points_success(db, at, task_id):
    """A successful loyalty.expire_points run finished at `at` (Celery stores naive UTC)."""
    insert(db, "celery_taskmeta", id=abs(hash(task_id)) % 2_000_000_000, task_id=task_id,
           status="SUCCESS", name="loyalty.expire_points", date_done=at.replace(tzinfo=None))


def google_runs(db, *ratios, end=T):
    """Google sync runs, the last one finishing at `end`, one every 15 minutes."""
    for i, ratio in enumerate(reversed(ratios)):
        finished = end - i * 15 * MIN
        insert(db, "loyalty_wallet_sync_runs", provider="google", started_at=finished - 5 * MIN,
               finished_at=finished, cards_total=100, cards_failed=int(ratio * 100),
               failed_card_ids=list(range(int(ratio * 100))))


def bodies(sink, prefix):
    return [r["body"] for r in sink.take(prefix)]


def p0_error_keys(*sources: str) -> list[str]:
    """The error incidents of the P0 checks reading those connections: each check reports its
    own (expiration_task_stale and google_wallet_down, and a site's own P0 checks)."""
    return sorted(f"loyalty/{c.id}/error" for c in catalog().for_severity("P0") if c.source in sources)


# ---------------------------------------------------------------- P0: trigger -> still firing -> resolve

def test_p0_trigger_then_silence_then_resolve(db, run_dag, sink):
    expire_points_success(db, T - 31 * H, "first")
    google_runs(db, 0.1, 0.2)  # healthy Google Wallet

    dr, states = run_dag(P0, T)
    assert dr.state == "success"
    assert states["expiration_task_stale.notify_pagerduty"] == "success"
    assert states["google_wallet_down.notify_pagerduty"] == "skipped"
    url = run_url(P0, dr.run_id)
    runbook = f"{RUNBOOK}#expiration_task_stale"
    assert bodies(sink, "/pagerduty") == [{
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "loyalty/expiration_task_stale",
        "payload": {
            "summary": "[P0] expiration_task_stale: Point expiration task stale — 31.0 h (threshold > 26.0 h)",
            "severity": "critical",
            "source": "loyalty_db",
            "timestamp": "2026-11-23T08:00:00+00:00",
            "component": "loyalty",
            "group": P0,
            "class": "expiration_task_stale",
            "custom_details": {
                "check_id": "expiration_task_stale",
                "title": "Point expiration task stale",
                "metric": "hours since the last successful loyalty.expire_points",
                "value": 31.0,
                "value_text": "31.0 h",
                "threshold": 26.0,
                "comparison": ">",
                "window": None,
                "evaluated_at": "2026-11-23T08:00:00+00:00",
                "entities": [],
                "entities_more": 0,
                "action": "Check Celery worker health, inspect task logs",
                "runbook_url": runbook,
                "airflow_run_url": url,
            },
        },
        "links": [{"href": runbook, "text": "Runbook: expiration_task_stale"},
                  {"href": url, "text": "Airflow run"}],
    }]
    [slack] = bodies(sink, "/slack/alerts")
    assert slack["text"] == "[P0] FIRING: Point expiration task stale — 31.0 h (threshold > 26.0 h)"
    assert slack["blocks"][0] == {"type": "header", "text": {
        "type": "plain_text", "text": "🔴 P0 FIRING · Point expiration task stale"}}
    assert {"type": "mrkdwn", "text": "*Value*\n31.0 h (threshold > 26.0 h)"} in slack["blocks"][2]["fields"]
    assert {"type": "mrkdwn", "text": "*Evaluated at (T)*\n2026-11-23 08:00 UTC"} in slack["blocks"][2]["fields"]
    assert slack["blocks"][3]["text"]["text"] == "*Action*\nCheck Celery worker health, inspect task logs"
    assert [b["url"] for b in slack["blocks"][4]["elements"]] == [runbook, url]
    assert sink.requests == []

    # Five minutes later, still firing: nothing is sent.
    dr, states = run_dag(P0, T + 5 * MIN)
    assert dr.state == "success"
    assert states["expiration_task_stale.decide"] == "success"
    assert states["expiration_task_stale.notify_pagerduty"] == "skipped"
    assert sink.requests == []

    # The task succeeds again: one resolve with the same dedup_key, one Slack "resolved".
    expire_points_success(db, T + 7 * MIN, "second")
    dr, _ = run_dag(P0, T + 10 * MIN)
    [resolve] = bodies(sink, "/pagerduty")
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == "loyalty/expiration_task_stale"
    assert resolve["routing_key"] == ROUTING_KEY
    [slack] = bodies(sink, "/slack/alerts")
    assert slack["text"] == "[P0] RESOLVED: Point expiration task stale after 10m — 0.1 h (threshold > 26.0 h)"
    assert slack["blocks"][0]["text"]["text"] == "✅ RESOLVED · Point expiration task stale"
    assert sink.requests == []


def test_p0_rerun_of_the_same_time_sends_nothing_twice(db, run_dag, sink):
    google_runs(db, 0.7, 0.9)
    expire_points_success(db, T - 1 * H, "ok")
    run_dag(P0, T)
    [trigger] = bodies(sink, "/pagerduty")
    assert trigger["dedup_key"] == "loyalty/google_wallet_down"
    assert trigger["payload"]["summary"] == (
        "[P0] google_wallet_down: Google Wallet service down — 70.0% (threshold > 50.0%)")
    assert len(bodies(sink, "/slack/alerts")) == 1

    dr, states = run_dag(P0, T)  # the same T again (a cleared / re-run evaluation)
    assert dr.state == "success"
    assert states["google_wallet_down.notify_pagerduty"] == "success"  # ran, found it already sent
    assert sink.requests == []


def test_p0_healthy_data_sends_nothing(db, run_dag, sink):
    expire_points_success(db, T - 26 * H, "at-threshold")  # exactly 26 h: not > 26
    google_runs(db, 0.9, 0.5)  # the latest is exactly 50%: not both > 50%
    dr, states = run_dag(P0, T)
    assert dr.state == "success"
    # (a site's own P0 check has notify tasks too: only those of the two shipped ones are named here)
    assert {k: v for k, v in states.items() if k.split(".")[-1].startswith("notify")
            and k.split(".")[0] in ("expiration_task_stale", "google_wallet_down")} == {
        "expiration_task_stale.notify_pagerduty": "skipped", "expiration_task_stale.notify_slack": "skipped",
        "google_wallet_down.notify_pagerduty": "skipped", "google_wallet_down.notify_slack": "skipped"}
    assert sink.requests == []


# ---------------------------------------------------------------- errors

def test_unreachable_loyalty_db_pages_an_error_once_then_resolves_it(db, run_dag, sink, monkeypatch, pg, loyalty_db):
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "postgres", "schema": "nowhere"}))
    dr, states = run_dag(P0, T)
    assert dr.state == "failed"  # honest: the checks could not run
    assert states["expiration_task_stale.measure"] == "failed"
    assert states["expiration_task_stale.report_error"] == "success"
    assert states["expiration_task_stale.notify_pagerduty"] == "upstream_failed"
    pages = bodies(sink, "/pagerduty")
    assert sorted(p["dedup_key"] for p in pages) == p0_error_keys("loyalty_db")
    assert {p["event_action"] for p in pages} == {"trigger"}
    page = next(p for p in pages if p["dedup_key"] == "loyalty/expiration_task_stale/error")
    assert page["payload"]["severity"] == "error"
    assert "could not be evaluated" in page["payload"]["summary"]
    assert "OperationalError" in page["payload"]["custom_details"]["error"]
    slack = bodies(sink, "/slack/alerts")
    assert len(slack) == len(p0_error_keys("loyalty_db")) and all("CHECK FAILED" in s["text"] for s in slack)

    run_dag(P0, T + 5 * MIN)  # still unreachable: already reported
    assert sink.requests == []

    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", pg.airflow_conn(loyalty_db))
    expire_points_success(db, T, "fresh")
    dr, _ = run_dag(P0, T + 10 * MIN)
    assert dr.state == "success"
    pages = bodies(sink, "/pagerduty")
    assert sorted((p["event_action"], p["dedup_key"]) for p in pages) == [
        ("resolve", key) for key in p0_error_keys("loyalty_db")]
    assert all("CHECK RUNS AGAIN" in s["text"] for s in bodies(sink, "/slack/alerts"))


# ---------------------------------------------------------------- P1: Slack only, entities

def test_p1_rate_limit_spikes_lists_stores_worst_first_escaped(db, run_dag, sink):
    merchant(db, 1, "Acme")
    hostile = "Burger <!channel> *Palace* & Co_ <http://evil.example|click>"
    store(db, 10, 1, hostile)
    store(db, 11, 1, "Quiet Store")
    store(db, 12, 1, "Busy Store")
    minute = T - 30 * MIN
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT s, %s, 'POST', '/api/loyalty' FROM (VALUES (10, 150), (11, 100), (12, 101)) v(s, n),"
               " generate_series(1, n)", (minute,))
    dr, states = run_dag(P1, T)
    assert dr.state == "success"
    assert states["rate_limit_spikes.notify_slack"] == "success"
    assert states["email_failure_rate.notify_slack"] == "skipped"
    assert bodies(sink, "/pagerduty") == []  # P1 never pages
    [slack] = bodies(sink, "/slack/alerts")
    assert slack["text"] == "[P1] FIRING: Rate limit spikes — 150 per minute (threshold > 100 per minute)"
    entity_block = slack["blocks"][3]["text"]["text"]
    assert entity_block == (
        "*Firing stores (2), worst first*\n"
        "1. Burger &lt;!channel&gt; ∗Palace∗ &amp; Coˍ &lt;http://evil.example|click&gt; (Acme) — 150 per minute\n"
        "2. Busy Store (Acme) — 101 per minute")
    assert "<!channel>" not in json.dumps(slack)


def test_p1_entities_are_capped_with_more(db, run_dag, sink):
    merchant(db, 1, "Acme")
    for i in range(13):
        store(db, 100 + i, 1, f"Store {i:02d}")
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT 100 + s, %s, 'GET', '/x' FROM generate_series(0, 12) s, generate_series(1, 101 + s)",
               (T - 10 * MIN,))
    run_dag(P1, T)
    [slack] = bodies(sink, "/slack/alerts")
    lines = slack["blocks"][3]["text"]["text"].split("\n")
    assert lines[0] == "*Firing stores (13), worst first*"
    assert lines[1] == "1. Store 12 (Acme) — 113 per minute"
    assert lines[10] == "10. Store 03 (Acme) — 104 per minute"
    assert lines[11] == "+3 more"
    assert len(lines) == 12


# ---------------------------------------------------------------- P2: the weekly digest

def test_p2_posts_one_digest(db, run_dag, sink):
    merchant(db, 1, "Acme *Coffee*")
    insert(db, "loyalty_programs", id=1, merchant_id=1, program_type="points", is_active=True,
           created_at=T - 60 * 24 * H)
    dr, states = run_dag(P2, T)
    assert dr.state == "success", states
    assert states["fail_if_any_failed"] == "skipped"
    assert sink.take("/slack/alerts") == [] and sink.take("/pagerduty") == []
    [digest] = bodies(sink, "/slack/reports")
    p2_checks = len(catalog().for_severity("P2"))  # 4 shipped, and a site's own
    assert digest["text"] == f"Loyalty weekly digest 2026-11-23 08:00 UTC: 1 of {p2_checks} P2 checks firing"
    checks = digest["blocks"][1]["text"]["text"]
    assert (f"🔴 *<{RUNBOOK}#low_enrollment|Low enrollment>* (`low_enrollment`): 0 cards — fires when < 5 cards"
            in checks)  # a firing check links to its runbook section
    assert "1 merchants: Acme ∗Coffee∗ (0 cards)" in checks
    assert "⚪ *High churn* (`high_churn`): no data" in checks
    titles = [b["text"]["text"].split("\n")[0] for b in digest["blocks"][3:-1]]
    assert titles == ["*New enrollments per day (last 7 days)*",
                      "*Top merchants by new enrollments (last 7 days)*",
                      "*Stamp completion rate (stamp-program cards with a redeem)*",
                      "*Wallet adoption (active cards with a pass)*",
                      "*loyalty_* e-mail statuses (last 7 days)*",
                      "*Celery outcomes of the loyalty tasks (last 7 days)*",
                      "*Top stores by 429 responses (last 7 days)*"]

    run_dag(P2, T)  # the same week again: no second digest
    assert sink.requests == []


@pytest.mark.parametrize("dag_id", [P0, P1, P2])
def test_empty_database_notifies_nothing_but_the_digest(db, run_dag, sink, dag_id):
    dr, _ = run_dag(dag_id, T)
    assert dr.state == "success"
    if dag_id == P0:  # no expire_points success at all: the no-data policy fires
        assert [p["dedup_key"] for p in bodies(sink, "/pagerduty")] == ["loyalty/expiration_task_stale"]
        assert len(bodies(sink, "/slack/alerts")) == 1
    elif dag_id == P2:
        assert len(bodies(sink, "/slack/reports")) == 1
    assert sink.requests == []
