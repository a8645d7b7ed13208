"""The alert state: loads, stores and claims; decides nothing (lifecycle.py decides,
pipeline.py wires the two together).

- `check_state`: one row per check, the lifecycle's CheckState as JSON; `locked_state`
  holds its row lock for one transaction, so two workers cannot both decide.
- `evaluations`: every outcome with the notifications it decided, keyed by (check, T),
  so a re-run of the same T gets the same decision back instead of a new one.
- `notifications`: one row per notification and channel; `once(key)` sends each at most
  once (an advisory lock while sending, a claim, then sent_at or the error).
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from loyalty_checks.catalog import Check
from loyalty_checks.evaluate import Evaluation, MeasurementError, excluded_hours, judged_hour
from loyalty_checks.lifecycle import CheckState, Decision, Known, Silence, silence_active


@dataclass(frozen=True)
class RunRef:
    """Which run an outcome belongs to."""
    dag_id: str
    run_id: str
    t: dt.datetime


@dataclass(frozen=True)
class NotificationKey:
    """One notification on one channel: what `once` sends at most once."""
    check_id: str
    t: dt.datetime
    event: str
    channel: str


def active_silences(conn, check_id: str, t: dt.datetime) -> list[Silence]:
    """The check's silences in force at T: those not ended at T (the query's bound), in force
    as lifecycle.silence_active says (the console asks the same)."""
    rows = conn.execute(
        "SELECT id, check_id, entity_id, ends_at, author, reason, starts_at FROM loyalty_monitoring.silences"
        " WHERE check_id = %s AND ends_at > %s ORDER BY id", (check_id, t)).fetchall()
    return [s for s in (Silence(*row) for row in rows) if silence_active(s, t)]


def left_out_hours(conn, check: Check, t: dt.datetime) -> dict[str | None, set[dt.datetime]]:
    """A baseline check's hours left out of each entity's history at T (evaluate.excluded_hours):
    from its firing evaluations and its silences within the span it learns from."""
    since = judged_hour(t) - check.baseline.span
    firing = conn.execute(
        "SELECT evaluated_at, entities FROM loyalty_monitoring.evaluations WHERE check_id = %s"
        " AND evaluated_at > %s AND evaluated_at < %s AND status = 'firing' ORDER BY evaluated_at",
        (check.id, since, t)).fetchall()
    silenced = conn.execute(
        "SELECT entity_id, starts_at, ends_at FROM loyalty_monitoring.silences"
        " WHERE check_id = %s AND ends_at > %s AND starts_at < %s", (check.id, since, t)).fetchall()
    return excluded_hours(check, t, firing, silenced)


@contextmanager
def locked_state(conn, check_id: str) -> Iterator[CheckState]:
    """One transaction holding the check's state row lock; yields its CheckState."""
    with conn.transaction():
        conn.execute("INSERT INTO loyalty_monitoring.check_state (check_id) VALUES (%s) ON CONFLICT DO NOTHING",
                     (check_id,))
        row = conn.execute("SELECT lifecycle FROM loyalty_monitoring.check_state WHERE check_id = %s FOR UPDATE",
                           (check_id,)).fetchone()
        yield CheckState.from_json(row[0])


def save_state(conn, check_id: str, state: CheckState) -> None:
    """Replace the lifecycle state of a check outside an evaluation (an acknowledgement)."""
    conn.execute("UPDATE loyalty_monitoring.check_state SET lifecycle = %s, updated_at = now() WHERE check_id = %s",
                 (json.dumps(state.to_json()), check_id))


def decided_before(conn, check_id: str, t: dt.datetime) -> tuple[str, list[dict[str, Any]]] | None:
    """(status, notifications) of the outcome already recorded for (check, T), if any."""
    row = conn.execute("SELECT status, notifications FROM loyalty_monitoring.evaluations"
                       " WHERE check_id = %s AND evaluated_at = %s", (check_id, t)).fetchone()
    return (row[0], row[1]) if row else None


def store(conn, check: Check, run: RunRef, outcome: Evaluation | MeasurementError, decision: Decision,
          silences: list[Silence]) -> None:
    """Store the decision: the check's new state (when it applied) and the outcome's row."""
    state = decision.state
    if decision.applied:
        conn.execute(
            "UPDATE loyalty_monitoring.check_state SET status = %s, since = %s, last_evaluated_at = %s,"
            " last_run_id = %s, lifecycle = %s, updated_at = now() WHERE check_id = %s",
            (str(state.status), state.since, run.t, run.run_id, json.dumps(state.to_json()), check.id))
    ev = outcome if isinstance(outcome, Evaluation) else None
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
            "run_id": run.run_id, "status": outcome.status, "alert_status": str(state.status),
            "value": ev.value if ev else None, "threshold": check.threshold, "comparison": check.comparison,
            "entities": json.dumps(ev.entities if ev else []),
            "entities_total": ev.entities_total if ev else 0,
            "details": json.dumps(ev.details if ev else {}),
            "error": outcome.message[:4000] if isinstance(outcome, MeasurementError) else None,
            "silenced": any(s.whole_check for s in silences),
            "silences": json.dumps([s.to_dict() for s in silences]),
            "notifications": json.dumps([n.to_dict() for n in decision.notifications]),
        },
    )


class AlertStore:
    """The DAGs' store for pipeline.run: one run's view of loyalty_monitoring on `conn`."""

    def __init__(self, conn, run: RunRef):
        self.conn, self.run = conn, run

    @contextmanager
    def deciding(self, check: Check, t: dt.datetime) -> Iterator[Known]:
        """The check's state under its row lock (held until the transaction ends), the
        silences active at T and what T was decided before."""
        with locked_state(self.conn, check.id) as state:
            excluded = left_out_hours(self.conn, check, t) if check.baseline is not None else None
            yield Known(state, active_silences(self.conn, check.id, t), decided_before(self.conn, check.id, t),
                        excluded)

    def record(self, check: Check, decision: Decision) -> None:
        store(self.conn, check, self.run, decision.outcome, decision, list(decision.silences))


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


# ---------------------------------------------------------------- sending once

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


def once(conn, key: NotificationKey, run_id: str, send: Callable[[], None]) -> bool:
    """Call `send` unless this notification was sent before; True if it was sent now.

    The one delivery protocol of every sender (alerts, errors, the digest): lock, claim,
    send, then record `sent_at`, or the error (and re-raise) so that a retry sends it.
    """
    with sending(conn, key.check_id, key.t, key.event, key.channel):
        if not claim_notification(conn, key.check_id, key.t, key.event, key.channel, run_id):
            return False
        try:
            send()
        except Exception as exc:
            mark_sent(conn, key.check_id, key.t, key.event, key.channel, error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        mark_sent(conn, key.check_id, key.t, key.event, key.channel)
    return True
