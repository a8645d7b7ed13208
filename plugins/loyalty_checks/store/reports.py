"""What the weekly digest and the alert-quality report read: the history of evaluations
with what was sent, the open alerts and the silences active at a time."""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterator, Sequence

from loyalty_checks.store import read_only, rows

HISTORY_TIMEOUT = dt.timedelta(minutes=5)   # a year of every check, streamed

HISTORY_SQL = """
SELECT e.check_id, e.severity, e.evaluated_at, e.status, e.alert_status, e.notifications,
       coalesce((SELECT jsonb_object_agg(s.event, s.channels)
                 FROM (SELECT n.event, jsonb_agg(n.channel ORDER BY n.channel) AS channels
                       FROM loyalty_monitoring.notifications AS n
                       WHERE n.check_id = e.check_id AND n.evaluated_at = e.evaluated_at
                         AND n.sent_at IS NOT NULL
                       GROUP BY n.event) AS s), '{}'::jsonb) AS sent
FROM loyalty_monitoring.evaluations AS e
WHERE e.evaluated_at > %(since)s AND e.evaluated_at <= %(until)s
  AND (%(check_id)s::text IS NULL OR e.check_id = %(check_id)s::text)
ORDER BY e.check_id, e.evaluated_at
"""


def evaluation_history(conn, since: dt.datetime, until: dt.datetime,
                       check_id: str | None = None) -> Iterator[tuple]:
    """(check_id, severity, T, status, alert_status, decided notifications, {event: channels
    sent}) of every evaluation in (since, until], by check then T; streamed, read only."""
    with read_only(conn, HISTORY_TIMEOUT, "loyalty_checks:quality"):
        with conn.cursor(name="loyalty_quality_history") as cur:  # streamed: flat memory
            cur.itersize = 2000
            cur.execute(HISTORY_SQL, {"since": since, "until": until, "check_id": check_id})
            yield from cur


def silences_active_at(conn, t: dt.datetime) -> list[dict[str, Any]]:
    """Every silence active at T (started, not ended), ending soonest first."""
    return rows(conn, "SELECT id, check_id, entity_id, starts_at, ends_at, author, reason"
                      " FROM loyalty_monitoring.silences WHERE starts_at <= %(t)s AND ends_at > %(t)s"
                      " ORDER BY ends_at, id", {"t": t})


def open_alerts(conn, check_ids: Sequence[str]) -> list[tuple[str, dt.datetime]]:
    """(check id, firing since) of the checks firing now, longest first."""
    return [(r["check_id"], r["since"]) for r in rows(
        conn, "SELECT check_id, since FROM loyalty_monitoring.check_state"
              " WHERE status = 'firing' AND check_id = ANY(%(checks)s) ORDER BY since", {"checks": list(check_ids)})]
