"""Acting on an alert — acknowledge it, silence it — from Slack or the console: one path.

Each action is one transaction on the alert state, under the check's row lock: the
lifecycle decides (`lifecycle.acknowledge`), the store remembers the state and the action
(`store.actions`, keyed by `dedup_key` so that a redelivered Slack action applies once),
and an acknowledgement of a check that pages tells PagerDuty (Events v2 `acknowledge`
with the check's dedup_key) before the transaction commits: if PagerDuty cannot be
reached, nothing is applied and the caller says why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loyalty_checks import lifecycle
from loyalty_checks.catalog import Check
from loyalty_checks.store import actions as stored
from loyalty_checks.store.alerts import locked_state, save_state
from loyalty_checks.units import stored_time

APPLIED, DUPLICATE, NOT_FIRING, ALREADY = "applied", "duplicate", "not firing", "already acknowledged"
SILENCES = {"loyalty_silence_1h": 1, "loyalty_silence_4h": 4, "loyalty_silence_24h": 24}  # action_id -> hours


@dataclass(frozen=True)
class Outcome:
    status: str                        # APPLIED, DUPLICATE, NOT_FIRING, ALREADY
    message: str                       # what the actor is told
    acknowledged_by: str | None = None
    acknowledged_at: dt.datetime | None = None
    silence: dict[str, Any] | None = None


def acknowledge(conn, check: Check, actor: str, source: str, dedup_key: str | None = None,
                at: dt.datetime | None = None) -> Outcome:
    """Acknowledge the check's firing episode (conn: autocommit, the alert state)."""
    at = at or dt.datetime.now(dt.timezone.utc)
    with conn.transaction():
        with locked_state(conn, check.id) as state:  # one at a time: a redelivery sees the first
            if dedup_key and stored.action_seen(conn, dedup_key):
                return Outcome(DUPLICATE, "already done")
            new, what = lifecycle.acknowledge(state, actor, at)
            if what == lifecycle.NOT_FIRING:
                return Outcome(NOT_FIRING, f"{check.id} is not firing: nothing to acknowledge")
            if what == lifecycle.ALREADY:
                stored.record_action(conn, check.id, "ack", actor, source, {"result": "already"}, dedup_key)
                return Outcome(ALREADY, f"{check.id} was acknowledged already by {state.acknowledged_by}",
                               state.acknowledged_by, _time(state.acknowledged_at))
            save_state(conn, check.id, new)
            stored.record_action(conn, check.id, "ack", actor, source, {}, dedup_key)
            if lifecycle.pages(check) or state.escalated:
                _acknowledge_pagerduty(check, actor)  # raises: the transaction rolls back
    return Outcome(APPLIED, f"{check.id} acknowledged by {actor}", actor, at)


def silence(conn, check: Check, hours: int, actor: str, source: str, dedup_key: str | None = None) -> Outcome:
    """A silence of the whole check from now for `hours`, as the console and the DAG add them;
    only while the check fires (a message's button on an alert that is over does nothing)."""
    from loyalty_checks.silences import add_silence

    with conn.transaction():
        with locked_state(conn, check.id) as state:  # one at a time: a redelivery sees the first
            if dedup_key and stored.action_seen(conn, dedup_key):
                return Outcome(DUPLICATE, "already done")
            if state.status != lifecycle.Status.FIRING:
                return Outcome(NOT_FIRING, f"{check.id} no longer fires: nothing to silence")
            added = add_silence(conn, check.id, f"from {source.capitalize()}", actor, duration=f"{hours}h")
            stored.record_action(conn, check.id, f"silence_{hours}h", actor, source,
                                 {"silence_id": added["id"], "ends_at": added["ends_at"]}, dedup_key)
    return Outcome(APPLIED, f"{check.id} silenced until {added['ends_at']:%Y-%m-%d %H:%M} UTC by {actor}",
                   silence=added)


def _acknowledge_pagerduty(check: Check, actor: str) -> None:
    from loyalty_checks.catalog import catalog
    from loyalty_checks.channels import registry
    from loyalty_checks.messages import dedup_key

    pager = registry.get(registry.pager())
    pager.post({"summary": f"[{check.severity}] {check.id}: acknowledged by {actor}", "severity": "info",
                "source": check.source, "action": "acknowledge", "dedup_key": dedup_key(check.id, "trigger")},
               catalog().dags[check.severity].http_timeout.total_seconds())


_time = stored_time
