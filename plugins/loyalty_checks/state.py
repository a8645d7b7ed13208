"""Alert state in loyalty_monitoring_db: record evaluations, decide transitions.

A check notifies on transitions only: ok -> firing sends `trigger`, firing -> ok sends
`resolve`, still firing sends nothing. An evaluation that cannot run records `error`
(reported once) without touching the alert's status; the next good evaluation sends
`error_resolve`. Every decision is stored with the evaluation, keyed by (check, T), so a
cleared and re-run task gets the same decision back instead of a new one, and an
evaluation older than the latest applied one (a backfill) is recorded but changes
nothing. All of it runs in one transaction holding the check's state row lock.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from loyalty_checks.catalog import INCLUDE_DIR, Check
from loyalty_checks.evaluate import ERROR, FIRING, Evaluation

MONITORING_DDL = INCLUDE_DIR / "sql" / "schema" / "monitoring.sql"
TRIGGER, RESOLVE, ERROR_EVENT, ERROR_RESOLVE = "trigger", "resolve", "error", "error_resolve"
_LOCK_KEY = 0x4C4F59414C5459  # advisory lock id for concurrent first-use DDL


def ensure_schema(conn) -> None:
    """Create the loyalty_monitoring tables if missing (safe to call concurrently)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(MONITORING_DDL.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class RunRef:
    """Which run an evaluation belongs to."""
    dag_id: str
    run_id: str
    t: dt.datetime


def _lock_state(conn, check_id: str) -> dict[str, Any]:
    conn.execute("INSERT INTO loyalty_monitoring.check_state (check_id) VALUES (%s) ON CONFLICT DO NOTHING",
                 (check_id,))
    cur = conn.execute(
        "SELECT status, since, last_evaluated_at, error_since FROM loyalty_monitoring.check_state"
        " WHERE check_id = %s FOR UPDATE", (check_id,))
    status, since, last_t, error_since = cur.fetchone()
    return {"status": status, "since": since, "last_evaluated_at": last_t, "error_since": error_since}


def _existing(conn, check_id: str, t: dt.datetime) -> tuple[str, list[str]] | None:
    row = conn.execute("SELECT status, events FROM loyalty_monitoring.evaluations"
                       " WHERE check_id = %s AND evaluated_at = %s", (check_id, t)).fetchone()
    return (row[0], list(row[1])) if row else None


def _save(conn, check: Check, run: RunRef, status: str, ev: Evaluation | None,
          events: list[str], error: str | None = None, firing_since: dt.datetime | None = None) -> None:
    conn.execute(
        """
        INSERT INTO loyalty_monitoring.evaluations
            (check_id, evaluated_at, severity, dag_id, run_id, status, value, threshold, comparison,
             entities, entities_total, details, error, events, firing_since)
        VALUES (%(check_id)s, %(t)s, %(severity)s, %(dag_id)s, %(run_id)s, %(status)s, %(value)s,
                %(threshold)s, %(comparison)s, %(entities)s, %(entities_total)s, %(details)s,
                %(error)s, %(events)s, %(firing_since)s)
        ON CONFLICT (check_id, evaluated_at) DO UPDATE SET
            dag_id = EXCLUDED.dag_id, run_id = EXCLUDED.run_id, status = EXCLUDED.status,
            value = EXCLUDED.value, entities = EXCLUDED.entities,
            entities_total = EXCLUDED.entities_total, details = EXCLUDED.details,
            error = EXCLUDED.error, events = EXCLUDED.events,
            firing_since = EXCLUDED.firing_since, recorded_at = now()
        """,
        {
            "check_id": check.id, "t": run.t, "severity": check.severity, "dag_id": run.dag_id,
            "run_id": run.run_id, "status": status, "value": ev.value if ev else None,
            "threshold": check.threshold, "comparison": check.comparison,
            "entities": json.dumps(ev.entities if ev else []),
            "entities_total": ev.entities_total if ev else 0,
            "details": json.dumps(ev.details if ev else {}), "error": error, "events": events,
            "firing_since": firing_since,
        },
    )


def record_evaluation(conn, check: Check, run: RunRef, ev: Evaluation) -> list[str]:
    """Store an evaluation and return the notifications it decides (maybe none)."""
    with conn.transaction():
        state = _lock_state(conn, check.id)
        existing = _existing(conn, check.id, run.t)
        if existing and existing[0] != ERROR:
            return existing[1]  # the same T was evaluated before: same decision, no new one
        events: list[str] = []
        firing_since = state["since"] if state["status"] == FIRING else None
        if state["last_evaluated_at"] is None or run.t >= state["last_evaluated_at"]:
            new_status = FIRING if ev.firing else "ok"  # no data under policy 'ok' counts as ok
            since = state["since"]
            if new_status != state["status"]:
                events.append(TRIGGER if new_status == FIRING else RESOLVE)
                since = run.t
                firing_since = run.t if new_status == FIRING else firing_since
            if state["error_since"] is not None:
                events.append(ERROR_RESOLVE)
            conn.execute(
                "UPDATE loyalty_monitoring.check_state SET status = %s, since = %s,"
                " last_evaluated_at = %s, last_run_id = %s, error_since = NULL, updated_at = now()"
                " WHERE check_id = %s", (new_status, since, run.t, run.run_id, check.id))
        _save(conn, check, run, ev.status, ev, events, firing_since=firing_since)
        return events


def record_error(conn, check: Check, run: RunRef, message: str) -> list[str]:
    """Store that `check` could not be evaluated at T; returns ['error'] the first time."""
    with conn.transaction():
        state = _lock_state(conn, check.id)
        existing = _existing(conn, check.id, run.t)
        if existing:
            return existing[1] if existing[0] == ERROR else []
        events: list[str] = []
        if state["last_evaluated_at"] is None or run.t >= state["last_evaluated_at"]:
            if state["error_since"] is None:
                events.append(ERROR_EVENT)
                conn.execute("UPDATE loyalty_monitoring.check_state SET error_since = %s, updated_at = now()"
                             " WHERE check_id = %s", (run.t, check.id))
        _save(conn, check, run, ERROR, None, events, error=message[:4000])
        return events


def load_evaluation(conn, check_id: str, t: dt.datetime) -> dict[str, Any] | None:
    """The stored evaluation of `check_id` at T, with the alert's state, as a dict."""
    cur = conn.execute(
        """
        SELECT e.status, e.value, e.threshold, e.comparison, e.entities, e.entities_total,
               e.details, e.error, e.events, e.run_id, e.firing_since AS fired_since
        FROM loyalty_monitoring.evaluations e
        WHERE e.check_id = %s AND e.evaluated_at = %s
        """, (check_id, t))
    row = cur.fetchone()
    if row is None:
        return None
    names = [d[0] for d in cur.description]
    return dict(zip(names, row, strict=True))


def claim_notification(conn, check_id: str, t: dt.datetime, event: str, channel: str, run_id: str) -> bool:
    """True if this notification still has to be sent (never sent before)."""
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO loyalty_monitoring.notifications (check_id, evaluated_at, event, channel, run_id, attempts)
            VALUES (%s, %s, %s, %s, %s, 1)
            ON CONFLICT (check_id, evaluated_at, event, channel)
            DO UPDATE SET attempts = notifications.attempts + 1
            RETURNING sent_at
            """, (check_id, t, event, channel, run_id)).fetchone()
    return row[0] is None


def mark_sent(conn, check_id: str, t: dt.datetime, event: str, channel: str, error: str | None = None) -> None:
    """Record delivery (or the delivery error, leaving it unsent for the retry)."""
    with conn.transaction():
        conn.execute(
            "UPDATE loyalty_monitoring.notifications SET sent_at = CASE WHEN %(error)s::text IS NULL"
            " THEN now() END, last_error = %(error)s"
            " WHERE check_id = %(c)s AND evaluated_at = %(t)s AND event = %(e)s AND channel = %(ch)s",
            {"error": error, "c": check_id, "t": t, "e": event, "ch": channel})
