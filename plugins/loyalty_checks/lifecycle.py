"""The alert lifecycle: from one evaluation and the previous state to the next state
and the notifications to send. Pure functions, no I/O (state.py stores the result).

Every check is a set of alerts, one per entity (store, merchant, provider); a check
without entities has one, keyed "_". Per alert:

    ok ──breach──> pending ──for_runs breaches in a row──> firing
    firing ──clear_runs clean evaluations in a row──> ok      (one breach resets the count)
    pending ──one clean evaluation──> ok

While firing, an evaluation is clean only on the ok side of `recovery_threshold`
(hysteresis) when the check has one. What people are told follows what they were told
before (`announced`): `trigger` when the first alerts fire, `update` when alerts are
added or recover while others still fire, `resolve` when the last one recovers,
`reminder` after `repeat_after` without news, `escalate` (to PagerDuty) once a P1 check
has fired for `escalate_after`. Silenced alerts advance like the others but are never
announced; when a silence ends, an alert still firing is announced then.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from loyalty_checks.catalog import Check
from loyalty_checks.evaluate import FIRING, NO_DATA, Evaluation

SCALAR = "_"  # the one alert of a check without entities
TRIGGER, UPDATE, REMINDER, ESCALATE, RESOLVE = "trigger", "update", "reminder", "escalate", "resolve"
ERROR, ERROR_RESOLVE = "error", "error_resolve"


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@dataclass
class Silence:
    id: int
    check_id: str
    entity_id: str | None      # None silences the whole check
    ends_at: dt.datetime
    author: str
    reason: str

    def covers(self, entity_id: str) -> bool:
        return self.entity_id is None or self.entity_id == entity_id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "entity_id": self.entity_id, "ends_at": self.ends_at.isoformat(),
                "author": self.author, "reason": self.reason}


@dataclass
class Notification:
    """One thing to tell people, and on which channels."""
    event: str
    channels: list[str]
    new: list[dict[str, Any]] = field(default_factory=list)        # alerts that started firing
    firing: list[dict[str, Any]] = field(default_factory=list)     # all announced firing alerts, worst first
    recovered: list[dict[str, Any]] = field(default_factory=list)  # alerts that recovered
    firing_since: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "channels": self.channels, "new": self.new, "firing": self.firing,
                "recovered": self.recovered, "firing_since": self.firing_since}


def initial_state() -> dict[str, Any]:
    return {"status": "ok", "since": None, "firing_since": None, "alerts": {}, "announced": [],
            "last_notified_at": None, "escalated": False, "error_since": None, "last_t": None}


def _still_breaching(check: Check, value: float | None, firing: bool) -> bool:
    if value is None:  # only reached for no_data: fire
        return True
    if firing and check.recovery_threshold is not None:
        return check.breaches(value, check.recovery_threshold)
    return check.breaches(value)


def _observations(check: Check, ev: Evaluation) -> dict[str, dict[str, Any]] | None:
    """Alert key -> observation {'id', 'name', 'value', ...}; None means 'keep the last state'."""
    if ev.status == NO_DATA:
        if check.no_data == "keep":
            return None
        if check.no_data == "fire":
            return {SCALAR: {"id": SCALAR, "name": "no data", "value": None}}
        return {}
    if check.entity is None:
        return {SCALAR: {"id": SCALAR, "name": check.title, "value": ev.value}}
    return {e["id"]: e for e in ev.all_entities}


def channels_for(check: Check, event: str, escalated: bool) -> list[str]:
    """Severity routes: P0 pages and posts; P1 posts, and pages once escalated."""
    paged = check.severity == "P0" or escalated
    slack = check.severity in ("P0", "P1")
    if event == REMINDER:
        return ["slack"] if slack else []
    return (["pagerduty"] if paged else []) + (["slack"] if slack else [])


def advance(check: Check, state: dict[str, Any], ev: Evaluation, t: dt.datetime,
            silences: list[Silence]) -> tuple[dict[str, Any], list[Notification]]:
    """The state after evaluation `ev` at `t`, and what to tell people about it."""
    state = {**initial_state(), **state}
    state["alerts"] = {k: dict(v) for k, v in state["alerts"].items()}
    notes: list[Notification] = []
    if state["error_since"]:
        notes.append(Notification(ERROR_RESOLVE, channels_for(check, ERROR_RESOLVE, state["escalated"])))
        state["error_since"] = None
    state["last_t"] = _iso(t)
    observed = _observations(check, ev)
    if observed is None:  # no data under 'keep': nothing moves
        return state, [n for n in notes if n.channels]

    alerts = state["alerts"]
    gone: dict[str, dict[str, Any]] = {}  # alerts that recovered now, with their last observation
    for key in set(alerts) | set(observed):
        alert = alerts.get(key, {"status": "ok", "breaches": 0, "cleans": 0, "since": None})
        seen = observed.get(key)
        if seen is not None:
            alert["entity"] = seen
        firing = alert["status"] == FIRING
        if seen is not None and _still_breaching(check, seen.get("value"), firing):
            alert["breaches"] += 1
            alert["cleans"] = 0
            if not firing and alert["breaches"] >= check.for_runs:
                alert.update(status=FIRING, since=_iso(t))
            elif alert["status"] == "ok":
                alert.update(status="pending", since=_iso(t))
            alerts[key] = alert
            continue
        alert["breaches"] = 0
        alert["cleans"] = alert["cleans"] + 1 if firing else 0
        if firing and alert["cleans"] < check.clear_runs:
            alerts[key] = alert  # clean, but not yet for clear_runs evaluations in a row
            continue
        alerts.pop(key, None)
        if firing:
            gone[key] = {**alert.get("entity", {"id": key, "name": key}),
                         "value": seen.get("value") if seen else None}

    episode_start = state["firing_since"]  # a resolve says how long the episode lasted
    statuses = {a["status"] for a in alerts.values()}
    status = FIRING if FIRING in statuses else "pending" if statuses else "ok"
    if status != state["status"]:
        state["since"] = _iso(t)
        state["firing_since"] = _iso(t) if status == FIRING else None
    state["status"] = status

    announced = set(state["announced"])
    firing_now = {k for k, a in alerts.items() if a["status"] == FIRING}
    quiet = {k for k in firing_now if any(s.covers(k) for s in silences)}
    new = firing_now - quiet - announced
    recovered = announced - firing_now
    told = (announced & firing_now) | new     # what people know is firing after this evaluation

    def ranked(keys) -> list[dict[str, Any]]:
        found = [alerts[k]["entity"] for k in keys]
        return sorted(found, key=lambda e: (check.worst_first_key(e["value"]) if e.get("value") is not None
                                            else float("-inf"), str(e.get("name")), str(e.get("id"))))

    event = None
    if new and not announced:
        event = TRIGGER
    elif announced and not told:
        event = RESOLVE
    elif new or recovered:
        event = UPDATE
    elif told - quiet and check.repeat_after is not None:
        last = _time(state["last_notified_at"])
        if last is None or t - last >= check.repeat_after:
            event = REMINDER
    if (event in (None, REMINDER, TRIGGER, UPDATE) and told - quiet and check.escalate_after is not None
            and not state["escalated"] and t - _time(state["firing_since"]) >= check.escalate_after):
        state["escalated"] = True
        event = event if event in (TRIGGER, UPDATE) else ESCALATE

    if event:
        notes.append(Notification(
            event, channels_for(check, event, state["escalated"]),
            new=ranked(new), firing=ranked(told),
            recovered=sorted((gone[k] for k in recovered if k in gone), key=lambda e: str(e.get("name"))),
            firing_since=episode_start if event == RESOLVE else state["firing_since"]))
    if event == RESOLVE or not told:
        state.update(announced=[], last_notified_at=None, escalated=False)
    else:
        state["announced"] = sorted(told)
        if event:
            state["last_notified_at"] = _iso(t)
    return state, [n for n in notes if n.channels]
