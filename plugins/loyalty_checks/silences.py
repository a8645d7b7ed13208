"""Silences: an operator mutes a check, or one entity of it, until a time.

A silenced evaluation is recorded (and its alert still advances) but notifies nobody;
a silence ends by itself at `ends_at`. Operators add and end silences from the command
line (below) or from the Airflow UI (the `loyalty_silences` DAG, triggered with params).

    python -m loyalty_checks.silences add --check rate_limit_spikes --entity 42 --for 4h \\
        --reason "load test of store 42" --author alice
    python -m loyalty_checks.silences list [--all]
    python -m loyalty_checks.silences expire 7

The CLI uses the Airflow connection `loyalty_monitoring_db` (set AIRFLOW_CONN_... as for
the workers) or `--dsn`. Times come from the database clock, like every worker's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from loyalty_checks.catalog import catalog, parse_duration

COLUMNS = ("id", "check_id", "entity_id", "starts_at", "ends_at", "author", "reason")


class SilenceError(ValueError):
    """A silence request names an unknown check, a bad duration or misses a field."""


def add_silence(conn, check_id: str, reason: str, author: str, duration: str | None = None,
                until: dt.datetime | None = None, entity_id: str | None = None,
                starts_at: dt.datetime | None = None) -> dict[str, Any]:
    """Silence `check_id` (or one entity of it) from now (or `starts_at`, e.g. a planned
    maintenance) for `duration`, or until `until`."""
    try:
        catalog().check(check_id)
    except KeyError:
        known = ", ".join(c.id for c in catalog().checks)
        raise SilenceError(f"unknown check {check_id!r} (known: {known})") from None
    if not (reason or "").strip() or not (author or "").strip():
        raise SilenceError("a silence needs a reason and an author")
    if (duration is None) == (until is None):
        raise SilenceError("give either a duration (e.g. 2h) or an end time, not both")
    length = parse_duration(duration, "silence duration") if duration else None
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO loyalty_monitoring.silences (check_id, entity_id, starts_at, ends_at, reason, author)
            VALUES (%(check)s, %(entity)s, coalesce(%(starts)s::timestamptz, now()),
                    coalesce(%(until)s::timestamptz, coalesce(%(starts)s::timestamptz, now()) + %(length)s::interval),
                    %(reason)s, %(author)s)
            RETURNING id, check_id, entity_id, starts_at, ends_at, author, reason
            """,
            {"check": check_id, "entity": entity_id or None, "until": until, "length": length, "starts": starts_at,
             "reason": reason.strip(), "author": author.strip()}).fetchone()
    return dict(zip(COLUMNS, row, strict=True))


def expire_silence(conn, silence_id: int) -> bool:
    """End a silence now; False if there is no such active silence."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE loyalty_monitoring.silences"
            " SET starts_at = least(starts_at, now() - interval '1 microsecond'), ends_at = now()"
            " WHERE id = %s AND ends_at > now() RETURNING id", (silence_id,)).fetchone()
    return row is not None


def list_silences(conn, include_ended: bool = False) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, check_id, entity_id, starts_at, ends_at, author, reason FROM loyalty_monitoring.silences"
        " WHERE %s OR ends_at > now() ORDER BY ends_at DESC, id", (include_ended,)).fetchall()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def _time(text: str | None, field: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SilenceError(f"{field}: expected an ISO 8601 time like 2026-11-24T18:00Z, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def apply_request(conn, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Carry out one request {'action': add|expire|list, ...}: the CLI's and the DAG's one path."""
    action = request.get("action")
    if action == "add":
        if not request.get("check_id"):
            raise SilenceError("choose the check to silence (check_id)")
        until = request.get("until") or None  # an end time wins over the (default) duration
        return [add_silence(conn, request.get("check_id") or "", request.get("reason") or "",
                            request.get("author") or "", duration=None if until else request.get("duration") or None,
                            until=_time(until, "until"),
                            entity_id=request.get("entity_id") or None,
                            starts_at=_time(request.get("starts_at"), "from"))]
    if action == "expire":
        if not expire_silence(conn, int(request["silence_id"])):
            raise SilenceError(f"no active silence with id {request['silence_id']}")
        return []
    if action == "list":
        return list_silences(conn, bool(request.get("include_ended")))
    raise SilenceError(f"unknown action {action!r} (add, expire, list)")


@contextmanager
def _connection(dsn: str | None) -> Iterator[Any]:
    if not dsn:
        from loyalty_checks import connections

        with connections.monitoring_db() as conn:
            yield conn
        return
    import psycopg

    from loyalty_checks.store import ensure_schema

    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_schema(conn)
        yield conn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loyalty_checks.silences", description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", help="loyalty_monitoring_db as a libpq URI (default: the Airflow connection)")
    sub = ap.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="silence a check or one of its entities")
    add.add_argument("--check", dest="check_id", required=True)
    add.add_argument("--entity", dest="entity_id", help="the entity id (store, merchant, provider)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--for", dest="duration", help="how long, e.g. 30m, 4h, 2d")
    when.add_argument("--until", help="an ISO 8601 end time, e.g. 2026-11-24T18:00Z")
    add.add_argument("--from", dest="starts_at", help="start later (ISO 8601), e.g. a planned maintenance")
    add.add_argument("--reason", required=True)
    add.add_argument("--author", required=True)
    ls = sub.add_parser("list", help="active silences")
    ls.add_argument("--all", dest="include_ended", action="store_true", help="ended ones too")
    ex = sub.add_parser("expire", help="end a silence now")
    ex.add_argument("silence_id", type=int)
    args = ap.parse_args(argv)
    try:
        with _connection(args.dsn) as conn:
            for row in apply_request(conn, vars(args)):
                print("  ".join(f"{k}={v}" for k, v in row.items()))
    except SilenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "expire":
        print(f"silence {args.silence_id} ended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
