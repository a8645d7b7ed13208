"""What people did to alerts (acknowledge, silence: `actions`), the Slack messages each
check posted (`slack_messages`, for chat.update) and the heartbeats of components outside
Airflow (`heartbeats`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from loyalty_checks.store import rows


def record_action(conn, check_id: str, action: str, actor: str, source: str, detail: dict[str, Any] | None = None,
                  dedup_key: str | None = None) -> bool:
    """Record one action; False when `dedup_key` was recorded before (a redelivery)."""
    row = conn.execute(
        "INSERT INTO loyalty_monitoring.actions (check_id, action, actor, source, detail, dedup_key)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        (check_id, action, actor, source, json.dumps(detail or {}, default=str), dedup_key)).fetchone()
    return row is not None


def action_seen(conn, dedup_key: str) -> bool:
    return conn.execute("SELECT 1 FROM loyalty_monitoring.actions WHERE dedup_key = %s",
                        (dedup_key,)).fetchone() is not None


def actions_of(conn, check_id: str, since: dt.datetime, until: dt.datetime | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
    """The check's actions in [since, until], newest first."""
    return rows(conn, "SELECT at, action, actor, source, detail FROM loyalty_monitoring.actions"
                      " WHERE check_id = %(check)s AND at >= %(since)s"
                      " AND (%(until)s::timestamptz IS NULL OR at <= %(until)s)"
                      " ORDER BY at DESC, id DESC LIMIT %(limit)s",
                {"check": check_id, "since": since, "until": until, "limit": limit})


def remember_message(conn, channel_id: str, ts: str, check_id: str, t: dt.datetime, event: str,
                     body: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO loyalty_monitoring.slack_messages (channel_id, ts, check_id, evaluated_at, event, body)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (channel_id, ts) DO UPDATE SET body = EXCLUDED.body",
        (channel_id, ts, check_id, t, event, json.dumps(body, default=str)))


def message(conn, channel_id: str, ts: str) -> dict[str, Any] | None:
    found = rows(conn, "SELECT channel_id, ts, check_id, evaluated_at, event, body"
                       " FROM loyalty_monitoring.slack_messages WHERE channel_id = %(c)s AND ts = %(ts)s",
                 {"c": channel_id, "ts": ts})
    return found[0] if found else None


def beat(conn, component: str, detail: dict[str, Any] | None = None) -> None:
    conn.execute("INSERT INTO loyalty_monitoring.heartbeats (component, beat_at, detail) VALUES (%s, now(), %s)"
                 " ON CONFLICT (component) DO UPDATE SET beat_at = now(), detail = EXCLUDED.detail",
                 (component, json.dumps(detail or {}, default=str)))


def last_beat(conn, component: str) -> dt.datetime | None:
    row = conn.execute("SELECT beat_at FROM loyalty_monitoring.heartbeats WHERE component = %s",
                       (component,)).fetchone()
    return row[0] if row else None
