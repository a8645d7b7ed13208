"""What the check page reads of a year of evaluations (store/console.py through
service.page_history), on a real PostgreSQL: thinned by the database to two points a
pixel column, yet the one spike, the errors (with their messages) and every notification
(counted in marks) are still there, and the timeline reads only the newest notifications.
"""

from __future__ import annotations

import datetime as dt

import pytest

from loyalty_checks.catalog import catalog

UTC = dt.timezone.utc
WIDTH = 880


@pytest.fixture
def year(loyalty_db, pg):
    """A year of a P0 check every 5 minutes: value 10, one spike of 999, two errors, and a
    notification every 50th evaluation."""
    from loyalty_checks.store import ensure_schema

    check = catalog().check("expiration_task_stale")
    until = dt.datetime(2026, 11, 30, tzinfo=UTC)
    since = until - dt.timedelta(days=365)
    with pg.connect(loyalty_db, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute("""
            INSERT INTO loyalty_monitoring.evaluations (check_id, evaluated_at, severity, dag_id, run_id, status,
                                                        alert_status, value, threshold, comparison, error)
            SELECT %(check)s, t, 'P0', 'loyalty_p0_checks', 'scheduled__' || n, s, s, v, 15, '>', e
            FROM generate_series(%(since)s::timestamptz, %(until)s, interval '5 minutes') WITH ORDINALITY g(t, n),
                 LATERAL (SELECT CASE WHEN n IN (1000, 90000) THEN 'error' WHEN n = 50000 THEN 'firing' ELSE 'ok' END,
                                 CASE WHEN n IN (1000, 90000) THEN NULL WHEN n = 50000 THEN 999 ELSE 10 END,
                                 CASE WHEN n IN (1000, 90000) THEN 'timeout #' || n END) x(s, v, e)
            """, {"check": check.id, "since": since, "until": until})
        conn.execute("""
            INSERT INTO loyalty_monitoring.notifications (check_id, evaluated_at, event, channel, run_id, attempts,
                                                          sent_at)
            SELECT check_id, evaluated_at, 'trigger', 'slack', run_id, 1, evaluated_at
            FROM loyalty_monitoring.evaluations WHERE right(run_id, 2) = '50'
            """)
        notes = conn.execute("SELECT count(*) FROM loyalty_monitoring.notifications").fetchone()[0]
        conn.execute("VACUUM ANALYZE loyalty_monitoring.evaluations")
        yield conn, check, since, until, notes


def test_a_year_is_thinned_in_the_database_but_keeps_spikes_errors_and_notifications(year):
    from loyalty_checks.console import chart, db, service

    conn, check, since, until, notes = year
    with db.reading(conn):
        history = service.page_history(conn, check, since, until, WIDTH, 200)
    values = [e for e in history["evaluations"] if e["status"] != "error"]
    errors = [e for e in history["evaluations"] if e["status"] == "error"]
    assert len(values) <= 2 * (WIDTH + 1)  # the lowest and highest of each pixel column (and T = until), not 105,121
    assert max(e["value"] for e in values) == 999 and min(e["value"] for e in values) == 10
    assert any(e["alert_status"] == "firing" for e in values)
    assert sorted(e["error"] for e in errors) == ["timeout #1000", "timeout #90000"]
    first_error = since + dt.timedelta(minutes=5 * 999)
    assert dt.datetime.fromisoformat(min(e["t"] for e in errors)) == first_error  # the error's own T
    assert sum(m["n"] for m in history["notification_marks"]) == notes  # every one counted in a mark
    assert len(history["notification_marks"]) <= WIDTH // chart.NOTE_PIXELS + 1
    assert len(history["notifications"]) == 200  # the timeline shows the newest 200 only
    newest = max(dt.datetime.fromisoformat(m["notes"][-1]["t"]) for m in history["notification_marks"])
    assert dt.datetime.fromisoformat(history["notifications"][-1]["t"]) == newest

    drawing = chart.build(history, check.threshold, check.recovery_threshold, since, until)
    assert len(drawing["notifications"]) == len(history["notification_marks"])
    for mark, group in zip(drawing["notifications"], history["notification_marks"], strict=True):
        assert mark["title"].startswith("trigger → slack at " if group["n"] == 1 else f"{group['n']} notifications: ")
    ys = [float(p.split(",")[1]) for s in drawing["segments"] for p in s.split()]
    assert min(ys) < drawing["threshold_y"]  # the spike is drawn above the threshold
    assert len(drawing["errors"]) == 2


def test_the_chart_marks_grouped_notifications_as_it_groups_them_itself():
    from loyalty_checks.console import chart

    t0 = dt.datetime(2026, 11, 20, tzinfo=UTC)
    notes = [{"t": (t0 + dt.timedelta(seconds=i)).isoformat(), "event": "trigger", "channels": ["slack"]}
             for i in range(7)]
    evals = [{"t": t0.isoformat(), "value": 1.0, "status": "ok", "alert_status": "ok", "error": None}]
    raw = chart.build({"evaluations": evals, "notifications": notes, "silences": []}, 100, None, t0,
                      t0 + dt.timedelta(days=365))
    grouped = chart.build({"evaluations": evals, "notifications": [], "silences": [],
                           "notification_marks": [{"n": 7, "notes": notes[:chart.NOTE_LINES]}]}, 100, None, t0,
                          t0 + dt.timedelta(days=365))
    assert raw["notifications"] == grouped["notifications"]
    [mark] = grouped["notifications"]
    assert mark["title"].startswith("7 notifications: trigger → slack at ") and mark["title"].endswith(" …")
