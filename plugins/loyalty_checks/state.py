"""Alert state in loyalty_monitoring_db: record evaluations, apply the lifecycle.

Every evaluation is stored with the notifications it decided, keyed by (check, T), in
one transaction that holds the check's state row lock: a cleared and re-run task gets
the same decision back instead of a new one, two workers on the same run cannot both
decide, and an evaluation older than the latest applied one (a backfill) is recorded
but moves nothing. lifecycle.py decides; this module only loads and stores.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from loyalty_checks.catalog import INCLUDE_DIR, Check
from loyalty_checks.evaluate import ERROR, Evaluation
from loyalty_checks.lifecycle import ERROR as ERROR_EVENT
from loyalty_checks.lifecycle import TRIGGER, Notification, Silence, advance, channels_for, initial_state

MONITORING_DDL = INCLUDE_DIR / "sql" / "schema" / "monitoring.sql"
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


def active_silences(conn, check_id: str, t: dt.datetime) -> list[Silence]:
    rows = conn.execute(
        "SELECT id, check_id, entity_id, ends_at, author, reason FROM loyalty_monitoring.silences"
        " WHERE check_id = %s AND starts_at <= %s AND ends_at > %s ORDER BY id", (check_id, t, t)).fetchall()
    return [Silence(*row) for row in rows]


def _lock_state(conn, check_id: str) -> dict[str, Any]:
    conn.execute("INSERT INTO loyalty_monitoring.check_state (check_id) VALUES (%s) ON CONFLICT DO NOTHING",
                 (check_id,))
    row = conn.execute("SELECT lifecycle FROM loyalty_monitoring.check_state WHERE check_id = %s FOR UPDATE",
                       (check_id,)).fetchone()
    return {**initial_state(), **(row[0] or {})}


def _store_state(conn, check_id: str, state: dict[str, Any], run: RunRef) -> None:
    conn.execute(
        "UPDATE loyalty_monitoring.check_state SET status = %s, since = %s, last_evaluated_at = %s,"
        " last_run_id = %s, lifecycle = %s, updated_at = now() WHERE check_id = %s",
        (state["status"], state["since"], run.t, run.run_id, json.dumps(state), check_id))


def _existing(conn, check_id: str, t: dt.datetime) -> tuple[str, list[dict]] | None:
    row = conn.execute("SELECT status, notifications FROM loyalty_monitoring.evaluations"
                       " WHERE check_id = %s AND evaluated_at = %s", (check_id, t)).fetchone()
    return (row[0], row[1]) if row else None


def _applies(state: dict[str, Any], t: dt.datetime) -> bool:
    """Evaluations are applied in order of T: an older one (a backfill) changes nothing."""
    return state["last_t"] is None or t >= dt.datetime.fromisoformat(state["last_t"])


def _save(conn, check: Check, run: RunRef, status: str, ev: Evaluation | None, state: dict[str, Any],
          notes: list[Notification], silences: list[Silence], error: str | None = None) -> None:
    conn.execute(
        """
        INSERT INTO loyalty_monitoring.evaluations
            (check_id, evaluated_at, severity, dag_id, run_id, status, alert_status, value, threshold,
             comparison, entities, entities_total, details, error, silenced, silences, notifications)
        VALUES (%(check_id)s, %(t)s, %(severity)s, %(dag_id)s, %(run_id)s, %(status)s, %(alert_status)s,
                %(value)s, %(threshold)s, %(comparison)s, %(entities)s, %(entities_total)s, %(details)s,
                %(error)s, %(silenced)s, %(silences)s, %(notifications)s)
        ON CONFLICT (check_id, evaluated_at) DO UPDATE SET
            dag_id = EXCLUDED.dag_id, run_id = EXCLUDED.run_id, status = EXCLUDED.status,
            alert_status = EXCLUDED.alert_status, value = EXCLUDED.value, entities = EXCLUDED.entities,
            entities_total = EXCLUDED.entities_total, details = EXCLUDED.details, error = EXCLUDED.error,
            silenced = EXCLUDED.silenced, silences = EXCLUDED.silences,
            notifications = EXCLUDED.notifications, recorded_at = now()
        """,
        {
            "check_id": check.id, "t": run.t, "severity": check.severity, "dag_id": run.dag_id,
            "run_id": run.run_id, "status": status, "alert_status": state["status"],
            "value": ev.value if ev else None, "threshold": check.threshold, "comparison": check.comparison,
            "entities": json.dumps(ev.entities if ev else []),
            "entities_total": ev.entities_total if ev else 0,
            "details": json.dumps(ev.details if ev else {}), "error": error,
            "silenced": any(s.entity_id is None for s in silences),
            "silences": json.dumps([s.to_dict() for s in silences]),
            "notifications": json.dumps([n.to_dict() for n in notes]),
        },
    )


def record_evaluation(conn, check: Check, run: RunRef, ev: Evaluation, paged_while_blind: bool = False,
                      error_while_blind: bool = False) -> list[dict[str, Any]]:
    """Store an evaluation, advance the lifecycle; returns the notifications it decides.

    What tasks.py sent while the state was unreachable: `paged_while_blind`, PagerDuty
    was paged for this check, so a trigger decided now goes to Slack only;
    `error_while_blind`, its error was reported, so this evaluation resolves it.
    """
    with conn.transaction():
        state = _lock_state(conn, check.id)
        existing = _existing(conn, check.id, run.t)
        if existing and existing[0] != ERROR:
            return existing[1]  # the same T was evaluated before: same decision, no new one
        silences = active_silences(conn, check.id, run.t)
        notes: list[Notification] = []
        if _applies(state, run.t):
            if error_while_blind and not state["error_since"]:
                state["error_since"] = run.t.isoformat()
            state, notes = advance(check, state, ev, run.t, silences)
            if paged_while_blind:
                for note in notes:
                    if note.event == TRIGGER:
                        note.channels = [c for c in note.channels if c != "pagerduty"]
                notes = [n for n in notes if n.channels]
            _store_state(conn, check.id, state, run)
        _save(conn, check, run, ev.status, ev, state, notes, silences)
        return [n.to_dict() for n in notes]


def record_error(conn, check: Check, run: RunRef, message: str) -> list[dict[str, Any]]:
    """Store that `check` could not be evaluated at T; the first error of a streak is reported.

    The alert itself is left as it was: an error neither resolves nor re-triggers it.
    """
    with conn.transaction():
        state = _lock_state(conn, check.id)
        existing = _existing(conn, check.id, run.t)
        if existing:
            return existing[1] if existing[0] == ERROR else []
        silences = active_silences(conn, check.id, run.t)
        notes: list[Notification] = []
        if _applies(state, run.t):
            if not state["error_since"]:
                state["error_since"] = run.t.isoformat()
                if not any(s.entity_id is None for s in silences):
                    notes = [Notification(ERROR_EVENT, channels_for(check, ERROR_EVENT, state["escalated"]))]
                    notes = [n for n in notes if n.channels]
            state["last_t"] = run.t.isoformat()
            _store_state(conn, check.id, state, run)
        _save(conn, check, run, ERROR, None, state, notes, silences, error=message[:4000])
        return [n.to_dict() for n in notes]


def load_evaluation(conn, check_id: str, t: dt.datetime) -> dict[str, Any] | None:
    """The stored evaluation of `check_id` at T as a dict."""
    cur = conn.execute(
        """
        SELECT status, alert_status, value, threshold, comparison, entities, entities_total, details,
               error, silenced, silences, notifications, run_id
        FROM loyalty_monitoring.evaluations WHERE check_id = %s AND evaluated_at = %s
        """, (check_id, t))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


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


@contextmanager
def sending(conn, check_id: str, t: dt.datetime, event: str, channel: str) -> Iterator[None]:
    """Hold a session lock on one notification while it is sent.

    A second worker sending the same notification waits here, then finds it sent and
    skips it; a worker that dies mid-send releases the lock with its connection, and
    the retry sends again (at least once; PagerDuty de-duplicates by dedup_key).
    """
    key = f"{check_id}|{t.isoformat()}|{event}|{channel}"
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
