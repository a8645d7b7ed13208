"""Recording outcomes in the store on a real PostgreSQL (pipeline.settle: the lifecycle
decides, store/alerts.py stores): transitions, reruns, backfills, errors, claims."""

from __future__ import annotations

import threading

import pytest

from loyalty_checks.catalog import catalog
from loyalty_checks.evaluate import Evaluation, MeasurementError
from loyalty_checks.pipeline import settle
from loyalty_checks.store import ensure_schema
from loyalty_checks.store.alerts import AlertStore, RunRef, claim_notification, load_evaluation, mark_sent
from tests.sql.rows import MIN, T

CHECK = catalog().check("rate_limit_spikes")


@pytest.fixture
def mon(pg, loyalty_db):
    with pg.connect(loyalty_db, autocommit=True) as conn:
        ensure_schema(conn)
        yield conn


def record(conn, check, run, outcome, blind=None):
    decision = settle(check, outcome, run.t, AlertStore(conn, run), blind)
    return [n.to_dict() for n in decision.notifications]


def record_evaluation(conn, check, run, evaluation):
    return record(conn, check, run, evaluation)


def record_error(conn, check, run, message):
    return record(conn, check, run, MeasurementError(check.id, message))


def ev(status, value=None, entities=()):
    found = [{"id": str(e), "name": f"Store {e}", "value": value} for e in entities]
    return Evaluation(CHECK.id, status, value, CHECK.threshold, CHECK.comparison,
                      entities=found, entities_total=len(found), all_entities=found)


def events(notes):
    return [n["event"] for n in notes]


def at(minutes):
    return RunRef("loyalty_p1_checks", f"run_{minutes}", T + minutes * MIN)


def test_transitions_notify_only_on_change(mon):
    assert events(record_evaluation(mon, CHECK, at(0), ev("ok", 10))) == []
    assert events(record_evaluation(mon, CHECK, at(60), ev("firing", 150, [10]))) == ["trigger"]
    assert events(record_evaluation(mon, CHECK, at(120), ev("firing", 160, [10, 11]))) == ["update"]  # a new store
    assert events(record_evaluation(mon, CHECK, at(180), ev("no_data"))) == ["resolve"]  # policy ok: no data is ok
    assert events(record_evaluation(mon, CHECK, at(240), ev("ok", 3))) == []
    row = load_evaluation(mon, CHECK.id, T + 180 * MIN)
    assert row["status"] == "no_data" and row["alert_status"] == "ok"
    [resolve] = row["notifications"]
    assert resolve["event"] == "resolve" and resolve["channels"] == ["slack"]
    assert resolve["firing_since"] == (T + 60 * MIN).isoformat()  # the resolve knows when it began
    assert [e["id"] for e in resolve["recovered"]] == ["10", "11"]
    firing = load_evaluation(mon, CHECK.id, T + 120 * MIN)
    assert [e["id"] for e in firing["entities"]] == ["10", "11"] and firing["entities_total"] == 2
    assert firing["alert_status"] == "firing"


def test_same_time_again_returns_the_same_decision(mon):
    assert events(record_evaluation(mon, CHECK, at(0), ev("firing", 150, [1]))) == ["trigger"]
    # A rerun of T sees the decision made then, even if the data changed meanwhile.
    assert events(record_evaluation(mon, CHECK, at(0), ev("ok", 1))) == ["trigger"]
    assert mon.execute("SELECT count(*) FROM loyalty_monitoring.evaluations").fetchone()[0] == 1


def test_older_time_is_recorded_but_changes_nothing(mon):
    assert events(record_evaluation(mon, CHECK, at(60), ev("firing", 150, [1]))) == ["trigger"]
    assert events(record_evaluation(mon, CHECK, at(0), ev("ok", 1))) == []  # a backfill of an earlier T
    assert events(record_evaluation(mon, CHECK, at(120), ev("firing", 150, [1]))) == []  # still firing
    assert mon.execute("SELECT status FROM loyalty_monitoring.check_state").fetchone() == ("firing",)


def test_error_is_reported_once_keeps_the_alert_and_resolves(mon):
    assert events(record_evaluation(mon, CHECK, at(0), ev("firing", 150, [1]))) == ["trigger"]
    assert events(record_error(mon, CHECK, at(60), "OperationalError: connection refused")) == ["error"]
    assert events(record_error(mon, CHECK, at(120), "OperationalError: connection refused")) == []
    assert events(record_error(mon, CHECK, at(120), "again")) == []  # retry of the same report
    assert mon.execute("SELECT status FROM loyalty_monitoring.check_state").fetchone() == ("firing",)
    # Evaluates again, still firing: only the error resolves; no new trigger.
    assert events(record_evaluation(mon, CHECK, at(180), ev("firing", 150, [1]))) == ["error_resolve"]
    assert load_evaluation(mon, CHECK.id, T + 60 * MIN)["error"] == "OperationalError: connection refused"


def test_error_then_a_successful_retry_of_the_same_time(mon):
    assert events(record_error(mon, CHECK, at(0), "timeout")) == ["error"]
    assert events(record_evaluation(mon, CHECK, at(0), ev("firing", 150, [1]))) == ["error_resolve", "trigger"]


def test_notification_claims(mon):
    assert claim_notification(mon, CHECK.id, T, "trigger", "slack", "r1") is True
    mark_sent(mon, CHECK.id, T, "trigger", "slack", error="HTTP 500")
    assert claim_notification(mon, CHECK.id, T, "trigger", "slack", "r1") is True  # failed: retry sends
    mark_sent(mon, CHECK.id, T, "trigger", "slack")
    assert claim_notification(mon, CHECK.id, T, "trigger", "slack", "r1") is False
    assert claim_notification(mon, CHECK.id, T, "trigger", "pagerduty", "r1") is True
    attempts, error = mon.execute("SELECT attempts, last_error FROM loyalty_monitoring.notifications"
                                  " WHERE channel = 'slack'").fetchone()
    assert (attempts, error) == (3, None)


def test_concurrent_first_use_and_evaluation(pg, loyalty_db):
    """Two workers creating the schema and evaluating the same T: one decision, one trigger."""
    results, errors = [], []

    def worker():
        try:
            with pg.connect(loyalty_db, autocommit=True) as conn:
                ensure_schema(conn)
                results.append(events(record_evaluation(conn, CHECK, at(0), ev("firing", 150, [1]))))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [["trigger"]] * 4  # all see the one decision; it is sent once (claims)
    assert mon_count(pg, loyalty_db) == 1


def mon_count(pg, db):
    with pg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM loyalty_monitoring.evaluations").fetchone()[0]


def test_a_silence_without_a_check_is_refused_by_name(mon):
    from loyalty_checks.silences import SilenceError, apply_request

    with pytest.raises(SilenceError, match=r"choose the check to silence \(check_id\)"):
        apply_request(mon, {"action": "add", "check_id": None, "reason": "r", "author": "a", "duration": "1h"})
    assert mon.execute("SELECT count(*) FROM loyalty_monitoring.silences").fetchone()[0] == 0
