"""Read the alert state in loyalty_monitoring for the console (read only, bound parameters only).

The alerts now come from `check_state.lifecycle` (lifecycle.py's stored JSON: `alerts`
maps an entity key, "_" for a check without entities, to {"status", "since", "entity":
{"id", "name", "value", ...}}), unpacked in SQL with jsonb_each so that 10,000 firing
entities stay one query. Every function takes an open connection (see db.reading) and
returns plain dicts with timezone-aware datetimes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

SCALAR = "_"  # the entity key of a check without entities (lifecycle.SCALAR)
ACTIVE = ("firing", "pending")


def _rows(conn, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def active_alerts(conn, check_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every alert now firing or pending of `check_ids`, unsorted (one row per entity)."""
    return _rows(conn, """
        SELECT s.check_id,
               a.key                                   AS entity_key,
               a.value->>'status'                      AS state,
               (a.value->>'since')::timestamptz        AS since,
               a.value->'entity'->>'id'                AS entity_id,
               a.value->'entity'->>'name'              AS entity_name,
               CASE WHEN jsonb_typeof(a.value->'entity'->'value') = 'number'
                    THEN (a.value->'entity'->>'value')::double precision END AS value,
               s.last_run_id, s.last_evaluated_at
        FROM loyalty_monitoring.check_state s
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(s.lifecycle->'alerts') = 'object'
                                           THEN s.lifecycle->'alerts' ELSE '{}'::jsonb END) a
        WHERE s.check_id = ANY(%(checks)s)
          AND s.status IN ('firing', 'pending')
          AND a.value->>'status' IN ('firing', 'pending')
        """, {"checks": list(check_ids)})


def active_silences(conn, check_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Silences in force now of `check_ids`."""
    return _rows(conn, """
        SELECT id, check_id, entity_id, starts_at, ends_at, author, reason
        FROM loyalty_monitoring.silences
        WHERE check_id = ANY(%(checks)s) AND starts_at <= now() AND ends_at > now()
        ORDER BY id
        """, {"checks": list(check_ids)})


def current_and_planned_silences(conn, check_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Silences that have not ended (active and planned), ending soonest last."""
    return _rows(conn, """
        SELECT id, check_id, entity_id, starts_at, ends_at, author, reason, created_at,
               starts_at <= now() AS active
        FROM loyalty_monitoring.silences
        WHERE check_id = ANY(%(checks)s) AND ends_at > now()
        ORDER BY ends_at DESC, id
        """, {"checks": list(check_ids)})


def last_notifications(conn, check_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """check id -> the latest notification sent {"event", "t", "channels", "sent_at", "run_id"}."""
    rows = _rows(conn, """
        SELECT c.check_id, last.evaluated_at AS t, last.event, sent.channels, sent.sent_at, last.run_id
        FROM unnest(%(checks)s::text[]) AS c(check_id)
        CROSS JOIN LATERAL (
            SELECT n.evaluated_at, n.event, n.run_id FROM loyalty_monitoring.notifications n
            WHERE n.check_id = c.check_id AND n.sent_at IS NOT NULL
            ORDER BY n.evaluated_at DESC, n.sent_at DESC LIMIT 1) last
        CROSS JOIN LATERAL (
            SELECT array_agg(n.channel ORDER BY n.channel) AS channels, max(n.sent_at) AS sent_at
            FROM loyalty_monitoring.notifications n
            WHERE n.check_id = c.check_id AND n.evaluated_at = last.evaluated_at
              AND n.event = last.event AND n.sent_at IS NOT NULL) sent
        """, {"checks": list(check_ids)})
    return {r.pop("check_id"): r for r in rows}


def latest_evaluations(conn, check_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """check id -> its latest evaluation and alert state (checks never evaluated are missing)."""
    rows = _rows(conn, """
        SELECT c.check_id, e.evaluated_at AS last_t, e.status, e.value, e.threshold, e.error,
               e.alert_status, e.dag_id, e.run_id, e.entities_total,
               jsonb_array_length(e.entities) AS entities_breaching,
               s.status AS state, s.since AS state_since,
               (s.lifecycle->>'error_since')::timestamptz AS error_since
        FROM unnest(%(checks)s::text[]) AS c(check_id)
        JOIN LATERAL (
            SELECT * FROM loyalty_monitoring.evaluations e
            WHERE e.check_id = c.check_id ORDER BY e.evaluated_at DESC LIMIT 1) e ON true
        LEFT JOIN loyalty_monitoring.check_state s ON s.check_id = c.check_id
        """, {"checks": list(check_ids)})
    return {r.pop("check_id"): r for r in rows}


def evaluations(conn, check_id: str, since: dt.datetime, until: dt.datetime | None,
                limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The evaluations of one check in [since, until], oldest first, at most the latest `limit`;
    and whether older ones were left out."""
    rows = _rows(conn, """
        SELECT evaluated_at AS t, status, value, alert_status, threshold, error, silenced,
               dag_id, run_id, entities_total, jsonb_array_length(entities) AS entities_breaching
        FROM loyalty_monitoring.evaluations
        WHERE check_id = %(check)s AND evaluated_at >= %(since)s
          AND (%(until)s::timestamptz IS NULL OR evaluated_at <= %(until)s)
        ORDER BY evaluated_at DESC LIMIT %(limit)s
        """, {"check": check_id, "since": since, "until": until, "limit": limit + 1})
    truncated = len(rows) > limit
    return rows[:limit][::-1], truncated


def notifications(conn, check_id: str, since: dt.datetime, until: dt.datetime | None) -> list[dict[str, Any]]:
    """Notifications of one check decided in [since, until], oldest first: one row per event
    with the channels it reached (`channels`) and those it did not (`failed`)."""
    return _rows(conn, """
        SELECT evaluated_at AS t, event,
               coalesce(array_agg(channel ORDER BY channel) FILTER (WHERE sent_at IS NOT NULL), '{}') AS channels,
               coalesce(array_agg(channel ORDER BY channel) FILTER (WHERE sent_at IS NULL), '{}') AS failed,
               max(sent_at) AS sent_at, max(last_error) AS last_error, min(run_id) AS run_id
        FROM loyalty_monitoring.notifications
        WHERE check_id = %(check)s AND evaluated_at >= %(since)s
          AND (%(until)s::timestamptz IS NULL OR evaluated_at <= %(until)s)
        GROUP BY evaluated_at, event
        ORDER BY evaluated_at, event
        """, {"check": check_id, "since": since, "until": until})


def silences_between(conn, check_id: str, since: dt.datetime, until: dt.datetime | None) -> list[dict[str, Any]]:
    """Silences of one check that overlap [since, until] (ended ones too)."""
    return _rows(conn, """
        SELECT id, check_id, entity_id, starts_at, ends_at, author, reason
        FROM loyalty_monitoring.silences
        WHERE check_id = %(check)s AND ends_at > %(since)s
          AND (%(until)s::timestamptz IS NULL OR starts_at <= %(until)s)
        ORDER BY starts_at, id
        """, {"check": check_id, "since": since, "until": until})


def silence_exists(conn, silence_id: int) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT id, check_id, entity_id, ends_at > now() AS active FROM loyalty_monitoring.silences"
                       " WHERE id = %(id)s", {"id": silence_id})
    return rows[0] if rows else None
