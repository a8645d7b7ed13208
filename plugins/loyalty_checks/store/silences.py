"""Silences: added, ended and listed for the console, the `loyalty_silences` DAG and the
CLI (silences.py validates the request first). Times are the database's `now()` unless given."""

from __future__ import annotations

import datetime as dt
from typing import Any

COLUMNS = ("id", "check_id", "entity_id", "starts_at", "ends_at", "author", "reason")


def add(conn, check_id: str, entity_id: str | None, reason: str, author: str, starts_at: dt.datetime | None,
        until: dt.datetime | None, length: dt.timedelta | None) -> dict[str, Any]:
    """A silence from `starts_at` (default now) until `until`, or for `length`."""
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO loyalty_monitoring.silences (check_id, entity_id, starts_at, ends_at, reason, author)
            VALUES (%(check)s, %(entity)s, coalesce(%(starts)s::timestamptz, now()),
                    coalesce(%(until)s::timestamptz, coalesce(%(starts)s::timestamptz, now()) + %(length)s::interval),
                    %(reason)s, %(author)s)
            RETURNING id, check_id, entity_id, starts_at, ends_at, author, reason
            """,
            {"check": check_id, "entity": entity_id, "until": until, "length": length, "starts": starts_at,
             "reason": reason, "author": author}).fetchone()
    return dict(zip(COLUMNS, row, strict=True))


def expire(conn, silence_id: int) -> bool:
    """End a silence now; False if there is no such active silence."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE loyalty_monitoring.silences"
            " SET starts_at = least(starts_at, now() - interval '1 microsecond'), ends_at = now()"
            " WHERE id = %s AND ends_at > now() RETURNING id", (silence_id,)).fetchone()
    return row is not None


def listed(conn, include_ended: bool = False) -> list[dict[str, Any]]:
    """Silences that have not ended (or all), ending last first."""
    rows = conn.execute(
        "SELECT id, check_id, entity_id, starts_at, ends_at, author, reason FROM loyalty_monitoring.silences"
        " WHERE %s OR ends_at > now() ORDER BY ends_at DESC, id", (include_ended,)).fetchall()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]
