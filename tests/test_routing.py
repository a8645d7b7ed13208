"""Routes changed in the catalog, run end to end with dag.test(): P1 routed to PagerDuty
pages (an untouched check's escalate_after is moot, not an error), and the weekly digest
shows what the lifecycle decided (a P2 check pending under for_runs is not "firing")."""

from __future__ import annotations

import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG
from tests.sql.rows import MIN, H, T, insert, merchant, store
from tests.test_dag_runs import P1, P2, bodies


def spike(db, minute, requests: int = 150) -> None:
    """Store 10 gets `requests` 429s in one minute (rate_limit_spikes fires above 100)."""
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT 10, %s, 'POST', '/api/loyalty' FROM generate_series(1, %s)", (minute, requests))


def busy_store(db, minute) -> None:
    merchant(db, 1, "Acme")
    store(db, 10, 1, "Busy Store")
    spike(db, minute)


@pytest.fixture
def site_catalog(tmp_path, monkeypatch):
    """site_catalog(change) -> a copy of the shipped catalog, changed, in use by the DAGs."""
    def make(change):
        data = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
        change(data)
        path = tmp_path / "site-checks.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
        return path
    return make


def test_p1_routed_to_pagerduty_pages(db, run_dag, sink, site_catalog):
    def page_p1(data):
        data["dags"]["P1"]["routes"] = ["pagerduty", "slack"]
        assert any("escalate_after" in c for c in data["checks"] if c["severity"] == "P1")  # left as it is
    site_catalog(page_p1)
    busy_store(db, T - 30 * MIN)
    dr, states = run_dag(P1, T)
    assert dr.state == "success", states
    assert states["rate_limit_spikes.notify_pagerduty"] == "success"
    assert states["p0_checks_stale.notify_pagerduty"] == "skipped"  # built for every P1 check, quiet here
    [page] = bodies(sink, "/pagerduty")
    assert page["dedup_key"] == "loyalty/rate_limit_spikes" and page["event_action"] == "trigger"
    assert page["payload"]["severity"] == "error"  # P1: an error, P0: critical
    assert page["payload"]["summary"].startswith("[P1] rate_limit_spikes: Rate limit spikes")
    [slack] = bodies(sink, "/slack/alerts")
    assert slack["text"].startswith("[P1] FIRING: Rate limit spikes")
    assert sink.requests == []

    spike(db, T + 30 * MIN)
    run_dag(P1, T + H)  # still firing an hour later: nothing new, no second page
    assert sink.requests == []
    run_dag(P1, T + 2 * H)  # quiet again: the incident resolves, on both channels
    assert [p["event_action"] for p in bodies(sink, "/pagerduty")] == ["resolve"]
    assert bodies(sink, "/slack/alerts")[0]["text"].startswith("[P1] RESOLVED: Rate limit spikes")


def test_digest_shows_the_lifecycles_status(db, run_dag, sink, site_catalog):
    def two_weeks_to_fire(data):
        data["dags"]["P2"]["defaults"]["for_runs"] = 2
    site_catalog(two_weeks_to_fire)
    merchant(db, 1, "Acme")
    insert(db, "loyalty_programs", id=1, merchant_id=1, program_type="points", is_active=True,
           created_at=T - 60 * 24 * H)
    run_dag(P2, T)  # low_enrollment breaches for the first week: pending, not firing
    [digest] = bodies(sink, "/slack/reports")
    assert digest["text"].startswith("Loyalty weekly digest 2026-11-23 08:00 UTC: 0 of ")
    assert "🟡 *Low enrollment* (`low_enrollment`): 0 cards — fires when < 5 cards" in digest["blocks"][1]["text"]["text"]

    run_dag(P2, T + 7 * 24 * H)  # the second week in a row: firing
    [digest] = bodies(sink, "/slack/reports")
    assert ": 1 of " in digest["text"]
    assert "🔴 *<" in digest["blocks"][1]["text"]["text"]


def test_a_check_runs_only_where_its_required_connection_exists(db, run_dag, sink, monkeypatch):
    """slack_actions_stale (requires_connection: slack_loyalty_socket): skipped without the
    connection; with it and no listener heartbeat ever, it fires."""
    import json

    dr, states = run_dag(P1, T)
    assert dr.state == "success"
    assert states["slack_actions_stale.measure"] == "skipped"
    assert states["slack_actions_stale.notify_slack"] == "skipped"
    assert sink.requests == []
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_LOYALTY_SOCKET", json.dumps({"conn_type": "slack", "password": "xapp-1"}))
    dr, states = run_dag(P1, T + H)
    assert states["slack_actions_stale.measure"] == "success"
    [slack] = bodies(sink, "/slack/alerts")
    assert slack["text"] == "[P1] FIRING: Slack actions listener down — no data (threshold > 5 min)"
