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
import re
import sys
from typing import Any

from loyalty_checks.catalog import catalog, parse_duration
from loyalty_checks.store import silences as stored
from loyalty_checks.units import parse_time

MAX_ENTITY_ID = 200
MAX_REASON = 1000
# The times a silence may name: a window of a year added to either end stays a datetime.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(9998, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class SilenceError(ValueError):
    """A silence request names an unknown check, a bad duration or misses a field
    (`field`, when one is to blame; the message then starts with it)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message = field, message


def _control(text: str, pattern: re.Pattern) -> str | None:
    m = pattern.search(text)
    return None if m is None else f"must not contain control characters (found U+{ord(m.group()):04X} at {m.start()})"


def check_entity_id(entity_id: str | None) -> str | None:
    """An entity id as the notifications carry it: text, at most 200 characters, no control characters."""
    if entity_id is None or entity_id == "":
        return None
    if not isinstance(entity_id, str):
        raise SilenceError(f"expected a string, got {type(entity_id).__name__}", "entity_id")
    if len(entity_id) > MAX_ENTITY_ID:
        raise SilenceError(f"at most {MAX_ENTITY_ID} characters", "entity_id")
    problem = _control(entity_id, _CONTROL)
    if problem:
        raise SilenceError(problem, "entity_id")
    return entity_id


def check_reason(reason: str) -> str:
    """A reason as every message shows it: at most 1000 characters, no control characters but line breaks."""
    problem = _control(reason, _CONTROL_BUT_NEWLINES)
    if problem:
        raise SilenceError(problem, "reason")
    if len(reason) > MAX_REASON:
        raise SilenceError(f"at most {MAX_REASON} characters", "reason")
    return reason


def check_time(t: dt.datetime, field: str) -> dt.datetime:
    """`t` (aware) in UTC, between EARLIEST and LATEST, or a SilenceError naming `field`."""
    try:
        utc = t.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise SilenceError(f"out of range: expected a time between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} UTC, "
                           f"got {t.isoformat()}", field)
    return utc


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
    check_reason(reason.strip())
    entity_id = check_entity_id(entity_id)
    until = check_time(until, "until") if until is not None else None
    starts_at = check_time(starts_at, "starts_at") if starts_at is not None else None
    length = parse_duration(duration, "silence duration") if duration else None
    return stored.add(conn, check_id, entity_id or None, reason.strip(), author.strip(), starts_at, until, length)


def expire_silence(conn, silence_id: int) -> bool:
    """End a silence now; False if there is no such active silence."""
    return stored.expire(conn, silence_id)


def list_silences(conn, include_ended: bool = False) -> list[dict[str, Any]]:
    return stored.listed(conn, include_ended)


def _time(text: str | None, field: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = parse_time(text)
    except ValueError:
        raise SilenceError(f"expected an ISO 8601 time like 2026-11-24T18:00Z, got {text!r}", field) from None
    return check_time(t, field)


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


def main(argv: list[str] | None = None) -> int:
    from loyalty_checks import connections

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
        with connections.cli_db(args.dsn) as conn:
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
