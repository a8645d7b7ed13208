"""The alert lifecycle end to end, `promtool test rules` style: rows and successive
times T in, `dag.test()` runs, and exactly these requests at the local Slack/PagerDuty
server out — pending, trigger, silence while firing, reminder, escalation, flapping,
resolve; silences from the CLI; the heartbeat.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG
from tests.conftest import ROOT
from tests.sql.rows import MIN, H, T, merchant, store
from tests.test_dag_runs import P0, P1, bodies, expire_points_success


@pytest.fixture
def tuned_catalog(tmp_path, monkeypatch):
    """Point the DAGs at a copy of the catalog with some checks' lifecycle changed."""

    def tune(**changes):
        data = yaml.safe_load(DEFAULT_CATALOG.read_text())
        for check in data["checks"]:
            check.update(changes.get(check["id"], {}))
        path = tmp_path / "checks.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))

    return tune


def spike(db, store_id, at, n=150):
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT %s, %s, 'POST', '/api/loyalty' FROM generate_series(1, %s)", (store_id, at, n))


def sent(sink):
    """What arrived since the last call, as (where, what) pairs."""
    out = []
    for r in sink.take():
        body = r["body"]
        if r["path"].startswith("/pagerduty"):
            out.append(("pagerduty", body["event_action"], body["dedup_key"]))
        elif r["path"].startswith("/slack"):
            out.append(("slack", body["text"].split(":")[0]))
        else:
            out.append((r.get("method", "POST"), r["path"]))
    return out


def test_p1_pending_trigger_reminder_escalation_flapping_resolve(db, run_dag, sink, tuned_catalog):
    tuned_catalog(rate_limit_spikes={"for_runs": 2, "clear_runs": 2, "repeat_after": "2h",
                                     "escalate_after": "3h"})
    merchant(db, 1, "Acme")
    store(db, 10, 1, "Busy Store")
    expected = {
        0: [],                                                     # pending
        1: [("slack", "[P1] FIRING")],                             # 2 breaches in a row
        2: [],                                                     # still firing
        3: [("slack", "[P1] STILL FIRING for 2h")],                # repeat_after 2h
        4: [("pagerduty", "trigger", "loyalty/rate_limit_spikes"),  # firing 3h: escalates
            ("slack", "[P1] ESCALATED TO PAGERDUTY after firing for 3h")],
        5: [],                                                     # one clean run (clear_runs 2)
        6: [("slack", "[P1] STILL FIRING for 5h")],                # flaps back: same alert; 2h since the last message
        7: [],                                                     # clean once more
        8: [("pagerduty", "resolve", "loyalty/rate_limit_spikes"),  # twice clean: resolved, also on PagerDuty
            ("slack", "[P1] RESOLVED")],
    }
    breaching_hours = {0, 1, 2, 3, 4, 6}
    for hour, want in expected.items():
        t = T + hour * H
        if hour in breaching_hours:
            spike(db, 10, t - 30 * MIN)
        dr, _ = run_dag(P1, t)
        assert dr.state == "success"
        assert sorted(sent(sink)) == sorted(want), f"after the run at T+{hour}h"
    states = db.execute("SELECT alert_status FROM loyalty_monitoring.evaluations"
                        " WHERE check_id = 'rate_limit_spikes' ORDER BY evaluated_at").fetchall()
    assert [s for (s,) in states] == ["pending"] + ["firing"] * 7 + ["ok"]


def test_entity_added_then_recovered_one_message_each(db, run_dag, sink):
    merchant(db, 1, "Acme")
    for sid in (10, 11):
        store(db, sid, 1, f"Store {sid}")
    spike(db, 10, T - 10 * MIN)
    run_dag(P1, T)
    [first] = bodies(sink, "/slack")
    assert first["text"].startswith("[P1] FIRING")
    spike(db, 10, T + 50 * MIN)
    spike(db, 11, T + 50 * MIN, n=300)
    run_dag(P1, T + H)
    [changed] = bodies(sink, "/slack")
    texts = [b["text"]["text"] for b in changed["blocks"] if b["type"] == "section" and "text" in b]
    assert changed["text"].startswith("[P1] CHANGED")
    assert "*New stores (1)*\n1. Store 11 (Acme) — 300 per minute" in texts
    assert "*Firing stores (2), worst first*\n1. Store 11 (Acme) — 300 per minute\n2. Store 10 (Acme) — 150 per minute" in texts
    spike(db, 11, T + 110 * MIN, n=300)
    run_dag(P1, T + 2 * H)
    [recovered] = bodies(sink, "/slack")
    texts = [b["text"]["text"] for b in recovered["blocks"] if b["type"] == "section" and "text" in b]
    assert "*Recovered stores (1)*\n1. Store 10 (Acme)" in texts
    assert sink.requests == []


def silence_cli(pg, loyalty_db, *args):
    out = subprocess.run([sys.executable, "-m", "loyalty_checks.silences", "--dsn",
                          pg.conninfo(loyalty_db), *args], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_silence_from_the_cli_mutes_then_expires(db, run_dag, sink, pg, loyalty_db):
    expire_points_success(db, T - 30 * H, "stale")
    out = silence_cli(pg, loyalty_db, "add", "--check", "expiration_task_stale", "--from", (T - H).isoformat(),
                      "--for", "2h", "--reason", "Celery <!here> migration", "--author", "alice")
    silence_id = int(out.split()[0].removeprefix("id="))
    dr, _ = run_dag(P0, T)
    assert dr.state == "success" and sink.requests == []  # fires, silenced: nobody told
    row = db.execute("SELECT status, alert_status, silenced FROM loyalty_monitoring.evaluations"
                     " WHERE check_id = 'expiration_task_stale'").fetchone()
    assert row == ("firing", "firing", True)
    assert "check_id=expiration_task_stale" in silence_cli(pg, loyalty_db, "list", "--all")

    run_dag(P0, T + 2 * H)  # the silence ended by itself (at T+1h): announced now
    [page] = bodies(sink, "/pagerduty")
    assert page["event_action"] == "trigger"
    assert len(bodies(sink, "/slack")) == 1
    # Ending silences by hand: a current one ends now; one that is over cannot be ended again.
    current = silence_cli(pg, loyalty_db, "add", "--check", "google_wallet_down", "--for", "4h",
                          "--reason", "Google maintenance", "--author", "bob")
    current_id = current.split()[0].removeprefix("id=")
    assert f"id={current_id}" in silence_cli(pg, loyalty_db, "list")
    assert f"silence {current_id} ended" in silence_cli(pg, loyalty_db, "expire", current_id)
    assert silence_cli(pg, loyalty_db, "list") == ""
    with pytest.raises(AssertionError, match=f"no active silence with id {silence_id}"):
        silence_cli(pg, loyalty_db, "expire", str(silence_id))


def test_entity_silence_is_shown_in_the_message(db, run_dag, sink, pg, loyalty_db):
    from loyalty_checks.silences import add_silence

    merchant(db, 1, "Acme")
    for sid in (10, 11):
        store(db, sid, 1, f"Store {sid}")
    with pg.connect(loyalty_db, autocommit=True) as conn:
        from loyalty_checks.store import ensure_schema

        ensure_schema(conn)
        add_silence(conn, "rate_limit_spikes", "load test <!channel>", "bob", until=T + 3 * H,
                    entity_id="10", starts_at=T - H)
    spike(db, 10, T - 10 * MIN, n=500)
    spike(db, 11, T - 10 * MIN)
    run_dag(P1, T)
    [slack] = bodies(sink, "/slack")
    texts = "\n".join(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section" and "text" in b)
    assert "*Firing stores (1), worst first*\n1. Store 11 (Acme) — 150 per minute" in texts
    assert "🔕 Silenced: store 10 until 2026-11-23 11:00 UTC by bob — load test &lt;!channel&gt;" in texts


def test_silence_cli_rejects_bad_input(pg, loyalty_db):
    out = subprocess.run([sys.executable, "-m", "loyalty_checks.silences", "--dsn", pg.conninfo(loyalty_db),
                          "add", "--check", "no_such_check", "--for", "2h", "--reason", "x", "--author", "y"],
                         capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 2 and "unknown check 'no_such_check'" in out.stderr


def test_silences_dag_adds_a_silence(db, dagbag, airflow_conns, sink):
    dag = dagbag.dags["loyalty_silences"]
    dr = dag.test(run_conf={"action": "add", "check_id": "google_wallet_down", "duration": "30m",
                            "reason": "Google maintenance window", "author": "carol"})
    assert dr.state == "success"
    row = db.execute("SELECT check_id, entity_id, author, reason, ends_at - starts_at"
                     " FROM loyalty_monitoring.silences").fetchone()
    assert row[:4] == ("google_wallet_down", None, "carol", "Google maintenance window")
    assert row[4].total_seconds() == 1800


def test_heartbeat_pings_after_every_p0_run(db, run_dag, sink, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_HEARTBEAT", json.dumps(
        {"conn_type": "http", "host": f"{sink.url}/ping/abc123", "extra": {"fail_endpoint": "/fail"}}))
    expire_points_success(db, T - H, "ok")
    dr, states = run_dag(P0, T)
    assert states["heartbeat"] == "success" and states["heartbeat_failed"] == "skipped"
    assert sent(sink) == [("GET", "/ping/abc123")]

    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "x", "schema": "x"}))
    dr, states = run_dag(P0, T + 5 * MIN)
    assert dr.state == "failed"
    assert states["heartbeat_failed"] == "success"
    assert ("GET", "/ping/abc123/fail") in sent(sink)


def test_no_heartbeat_connection_is_skipped(db, run_dag, sink):
    expire_points_success(db, T - H, "ok")
    dr, states = run_dag(P0, T)
    assert dr.state == "success" and states["heartbeat"] == "skipped"


def test_p1_reports_p0_checks_not_running(db, run_dag, sink):
    """The P1 watchdog pages when scheduled P0 runs stopped recording evaluations."""
    from loyalty_checks.store import ensure_schema

    ensure_schema(db)
    db.execute(
            "INSERT INTO loyalty_monitoring.evaluations (check_id, evaluated_at, severity, dag_id, run_id,"
            " status, threshold, comparison) VALUES ('expiration_task_stale', %s, 'P0', %s, 'scheduled__x',"
            " 'ok', 26, '>')", (T - 40 * MIN, P0))
    run_dag(P1, T)
    assert sorted(sent(sink)) == [("pagerduty", "trigger", "loyalty/p0_checks_stale"), ("slack", "[P1] FIRING")]


def test_routing_p1_to_pagerduty_makes_a_p1_trigger_page(db, run_dag, sink, tmp_path, monkeypatch):
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["dags"]["P1"]["routes"] = ["pagerduty", "slack"]
    for check in data["checks"]:  # escalating to PagerDuty means nothing once P1 pages anyway
        check.pop("escalate_after", None)
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
    merchant(db, 1, "Acme")
    store(db, 10, 1, "Busy Store")
    spike(db, 10, T - 30 * MIN)
    dr, states = run_dag(P1, T)
    assert dr.state == "success" and states["rate_limit_spikes.notify_pagerduty"] == "success"
    assert sorted(sent(sink)) == [("pagerduty", "trigger", "loyalty/rate_limit_spikes"), ("slack", "[P1] FIRING")]
