"""The alert lifecycle: the one place that decides. Pure functions, no I/O.

    decide(check, previous state, outcome, silences, T) -> Decision(state, notifications)

The outcome is an Evaluation (evaluate.py) or a MeasurementError. store/alerts.py loads and
stores what this returns; deliver.py sends it; nothing else decides.

Every check is a set of alerts, one per entity (store, merchant, provider); a check
without entities has one, keyed "_". Per alert:

    ok ──breach──> pending ──for_runs breaches in a row──> firing
    firing ──clear_runs clean evaluations in a row──> ok      (one breach resets the count)
    pending ──one clean evaluation──> ok

While firing, an evaluation is clean only on the ok side of `recovery_threshold`
(hysteresis) when the check has one. What people are told follows what they were told
before (`announced`): `trigger` when the first alerts fire, `update` when alerts are
added or recover while others still fire, `resolve` when the last one recovers,
`reminder` after `repeat_after` without news, `escalate` (to PagerDuty) once a check
that does not page has fired for `escalate_after`. Silenced alerts advance like the
others but are never announced; when a silence ends, an alert still firing is announced
then. A measurement error is reported once per streak (`error`), and resolved by the
next evaluation (`error_resolve`); it never moves the alerts. Evaluations apply in
order of T: an older T (a backfill) decides nothing.

Where each notification goes is the check's `routes` (catalog: `dags.<severity>.routes`
or the check's own), read by `channels()`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Sequence

from loyalty_checks.catalog import Check
from loyalty_checks.channels import registry
from loyalty_checks.evaluate import NO_DATA, Evaluation, MeasurementError
from loyalty_checks.units import stored_time

SCALAR = "_"  # the one alert of a check without entities


class Event(StrEnum):
    TRIGGER = "trigger"
    UPDATE = "update"
    REMINDER = "reminder"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    ERROR = "error"
    ERROR_RESOLVE = "error_resolve"


TRIGGER, UPDATE, REMINDER, ESCALATE, RESOLVE = (Event.TRIGGER, Event.UPDATE, Event.REMINDER, Event.ESCALATE,
                                                Event.RESOLVE)
ERROR, ERROR_RESOLVE = Event.ERROR, Event.ERROR_RESOLVE


class Status(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"




def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


_time = stored_time


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Silence:
    id: int
    check_id: str
    entity_id: str | None      # None silences the whole check
    ends_at: dt.datetime
    author: str
    reason: str
    starts_at: dt.datetime | None = None  # None: in force since before T (the store loads those only)

    def covers(self, entity_id: str) -> bool:
        return self.entity_id is None or self.entity_id == entity_id

    @property
    def whole_check(self) -> bool:
        return self.entity_id is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "entity_id": self.entity_id, "ends_at": self.ends_at.isoformat(),
                "author": self.author, "reason": self.reason}


def silence_active(silence: Silence, t: dt.datetime) -> bool:
    """Whether `silence` is in force at `t`: started (starts_at <= t) and not ended (t < ends_at)."""
    return (silence.starts_at is None or silence.starts_at <= t) and t < silence.ends_at


def silence_covers(silence: Silence, key: str, t: dt.datetime) -> bool:
    """Whether `silence` quiets the alert `key` (an entity id, SCALAR for a check without
    entities) at `t`: in force then, and of the whole check or of that entity. The DAGs
    (decide) and the console's "silenced" both ask this."""
    return silence_active(silence, t) and silence.covers(key)


@dataclass(frozen=True)
class SentWhileBlind:
    """What the fail-open path sent while the alert state was unreachable (task output,
    see tasks.py): when it paged the firing check, when it reported an error."""
    paged_at: dt.datetime | None = None
    error_reported_at: dt.datetime | None = None


BLIND_MEMORY = dt.timedelta(days=1)  # how long a fail-open send is remembered without repeat_after


# ---------------------------------------------------------------- state

@dataclass
class Alert:
    """One entity's alert (pending or firing; ok alerts are not kept)."""
    status: Status
    since: str | None = None
    breaches: int = 0
    cleans: int = 0
    entity: dict[str, Any] = field(default_factory=dict)  # the latest observation: id, name, value, ...

    def to_json(self) -> dict[str, Any]:
        return {"status": str(self.status), "since": self.since, "breaches": self.breaches,
                "cleans": self.cleans, "entity": self.entity}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        return cls(Status(data.get("status", "ok")), data.get("since"), int(data.get("breaches", 0)),
                   int(data.get("cleans", 0)), dict(data.get("entity") or {}))


@dataclass
class CheckState:
    """Everything remembered of a check between evaluations (stored as JSON by store/alerts.py)."""
    status: Status = Status.OK
    since: str | None = None                  # T at which `status` began
    firing_since: str | None = None           # T at which the current episode began
    alerts: dict[str, Alert] = field(default_factory=dict)
    announced: list[str] = field(default_factory=list)  # alert keys people were told are firing
    last_notified_at: str | None = None
    escalated: bool = False
    error_since: str | None = None            # T of the first error of the current streak
    last_t: str | None = None                 # T of the latest applied outcome
    acknowledged_by: str | None = None        # who acknowledged the firing episode (cleared on resolve)
    acknowledged_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": str(self.status), "since": self.since, "firing_since": self.firing_since,
                "alerts": {k: a.to_json() for k, a in self.alerts.items()}, "announced": list(self.announced),
                "last_notified_at": self.last_notified_at, "escalated": self.escalated,
                "error_since": self.error_since, "last_t": self.last_t,
                "acknowledged_by": self.acknowledged_by, "acknowledged_at": self.acknowledged_at}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> CheckState:
        data = data or {}
        return cls(status=Status(data.get("status") or "ok"), since=data.get("since"),
                   firing_since=data.get("firing_since"),
                   alerts={k: Alert.from_json(v) for k, v in (data.get("alerts") or {}).items()},
                   announced=list(data.get("announced") or []), last_notified_at=data.get("last_notified_at"),
                   escalated=bool(data.get("escalated")), error_since=data.get("error_since"),
                   last_t=data.get("last_t"), acknowledged_by=data.get("acknowledged_by"),
                   acknowledged_at=data.get("acknowledged_at"))

    def copy(self) -> CheckState:
        return replace(self, alerts={k: replace(a, entity=dict(a.entity)) for k, a in self.alerts.items()},
                       announced=list(self.announced))


def initial_state() -> CheckState:
    return CheckState()


ACKNOWLEDGED, ALREADY, NOT_FIRING = "acknowledged", "already acknowledged", "not firing"


def acknowledge(state: CheckState, actor: str, at: dt.datetime) -> tuple[CheckState, str]:
    """Someone is on the firing episode: no reminders and no escalation until it resolves.
    Returns the new state and what happened (ACKNOWLEDGED, ALREADY, NOT_FIRING); only
    ACKNOWLEDGED changes the state."""
    if state.status != Status.FIRING or not state.announced:
        return state, NOT_FIRING
    if state.acknowledged_by:
        return state, ALREADY
    state = state.copy()
    state.acknowledged_by, state.acknowledged_at = actor, _iso(at)
    return state, ACKNOWLEDGED


def shown_status(outcome_status: str | None, alert_status: str | None) -> str | None:
    """The status shown for a check after an evaluation: no_data / error for such an
    outcome, else the check's alert status as the lifecycle decided it (ok, pending, firing)."""
    if outcome_status in ("error", "no_data") or alert_status is None:
        return outcome_status
    return str(alert_status)


# ---------------------------------------------------------------- outputs

@dataclass
class Notification:
    """One thing to tell people, and on which channels."""
    event: Event
    channels: list[str]
    new: list[dict[str, Any]] = field(default_factory=list)        # alerts that started firing
    firing: list[dict[str, Any]] = field(default_factory=list)     # all announced firing alerts, worst first
    recovered: list[dict[str, Any]] = field(default_factory=list)  # alerts that recovered
    firing_since: str | None = None
    acknowledged: dict[str, str] | None = None  # {"by", "at"} when the episode was acknowledged

    def to_dict(self) -> dict[str, Any]:
        return {"event": str(self.event), "channels": list(self.channels), "new": self.new, "firing": self.firing,
                "recovered": self.recovered, "firing_since": self.firing_since, "acknowledged": self.acknowledged}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(Event(data["event"]), list(data["channels"]), list(data.get("new") or []),
                   list(data.get("firing") or []), list(data.get("recovered") or []), data.get("firing_since"),
                   data.get("acknowledged"))


@dataclass
class Decision:
    state: CheckState
    notifications: list[Notification]
    applied: bool = True   # False: an outcome older than the latest applied one moved nothing
    # What it was decided from (set by decide): stored beside it by the store.
    outcome: Evaluation | MeasurementError | None = None
    silences: Sequence[Silence] = ()


@dataclass(frozen=True)
class Known:
    """What the store knows of a check when it decides at T: its state, the silences active
    at T, and what this T was decided before ((status, notifications), or None)."""
    state: CheckState
    silences: Sequence[Silence] = ()
    earlier: tuple[str, list[dict[str, Any]]] | None = None
    excluded: dict[str, set[dt.datetime]] | None = None  # a baseline check's: hours left out of each
                                                          # entity's history (evaluate.excluded_hours)


def decided_again(earlier: tuple[str, list[dict[str, Any]]] | None,
                  outcome: Evaluation | MeasurementError) -> list[dict[str, Any]] | None:
    """A T decided before gets the same decision back (a re-run sends nothing new); only an
    evaluation may replace an earlier error of the same T (a retry that worked): None means
    decide anew."""
    if earlier is None:
        return None
    status, notes = earlier
    if isinstance(outcome, MeasurementError):
        return notes if status == ERROR else []
    return notes if status != ERROR else None


# ---------------------------------------------------------------- routing

def channels(check: Check, event: Event, escalated: bool) -> list[str]:
    """The check's routes for one event, in the registry's order (the pager first):
    reminders never page (the incident is open); an escalated episode adds the pager to
    every event until it resolves."""
    pager, routes = registry.pager(), set(check.routes)
    if escalated or event == ESCALATE:
        routes.add(pager)
    if event == REMINDER:
        routes.discard(pager)
    return [c for c in registry.names() if c in routes]


def channels_used(check: Check) -> list[str]:
    """Every channel some event of the check may go to (the DAG builds a notify task each)."""
    used = set(check.routes) | ({registry.pager()} if check.escalate_after is not None else set())
    return [c for c in registry.names() if c in used]


def pages(check: Check, event: Event = TRIGGER) -> bool:
    """True when this event of the check goes to the pager before any escalation."""
    return registry.pager() in channels(check, event, escalated=False)


# ---------------------------------------------------------------- the decision

def decide(check: Check, state: CheckState, outcome: Evaluation | MeasurementError,
           silences: Sequence[Silence], t: dt.datetime, blind: SentWhileBlind | None = None) -> Decision:
    """The next state of `check` after `outcome` at `t`, and what to tell people.

    `blind` is what the fail-open path sent while the state was unreachable: honoured
    only when it happened after the latest applied outcome (so an old one is ignored).
    """
    if state.last_t is not None and t < _time(state.last_t):
        return Decision(state, [], applied=False)
    state = state.copy()
    paged_blind = _remembered(check, state, blind and blind.paged_at, t)
    error_blind = _remembered(check, state, blind and blind.error_reported_at, t)
    if error_blind and not state.error_since:
        state.error_since = _iso(error_blind)
    state.last_t = _iso(t)
    if isinstance(outcome, MeasurementError):
        return Decision(state, _on_error(check, state, t, silences))
    notes = _error_resolved(check, state)
    observed = _observations(check, outcome)
    if observed is not None:  # None: no data under 'keep', nothing moves
        gone = _step_alerts(check, state, observed, t)
        episode_start = _roll_up(state, t)
        note = _announce(check, state, gone, silences, t, episode_start)
        if note and paged_blind and note.event == TRIGGER:
            note.channels = [c for c in note.channels if c != registry.pager()]  # paged already, while blind
        notes += [note] if note else []
    return Decision(state, [n for n in notes if n.channels])


def _remembered(check: Check, state: CheckState | None, at: dt.datetime | None,
                t: dt.datetime) -> dt.datetime | None:
    """A fail-open send counts when it came after the latest applied outcome and not
    longer ago than the check's reminder interval (else it is sent again: PagerDuty
    folds a repeated trigger into the open incident by its dedup_key)."""
    if not at or t - at >= (check.repeat_after or BLIND_MEMORY):
        return None
    if state is not None and state.last_t is not None and at <= _time(state.last_t):
        return None
    return at


def fail_open(check: Check, outcome: Evaluation | MeasurementError, blind: SentWhileBlind | None,
              t: dt.datetime) -> list[Notification] | None:
    """What to send when the alert state cannot be reached: a firing check that pages
    still pages, and an error is still reported, each once while blind (`blind`).
    None: fail open does not apply (nothing would page), so the task fails instead."""
    if isinstance(outcome, MeasurementError):
        if _remembered(check, None, blind and blind.error_reported_at, t):
            return []
        note = Notification(ERROR, channels(check, ERROR, escalated=False))
        return [note] if note.channels else []
    if not (outcome.firing and pages(check)):
        return None
    if _remembered(check, None, blind and blind.paged_at, t):
        return []
    return [Notification(TRIGGER, [registry.pager()], firing=list(outcome.entities), firing_since=_iso(t))]


def _on_error(check: Check, state: CheckState, t: dt.datetime, silences: Sequence[Silence]) -> list[Notification]:
    """The first error of a streak is reported (unless the whole check is silenced); the
    alerts are left as they were: an error neither resolves nor re-triggers them."""
    if state.error_since:
        return []
    state.error_since = _iso(t)
    if any(s.whole_check and silence_active(s, t) for s in silences):
        return []
    note = Notification(ERROR, channels(check, ERROR, state.escalated))
    return [note] if note.channels else []


def _error_resolved(check: Check, state: CheckState) -> list[Notification]:
    if not state.error_since:
        return []
    state.error_since = None
    return [Notification(ERROR_RESOLVE, channels(check, ERROR_RESOLVE, state.escalated))]


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


def _breaching(check: Check, seen: dict[str, Any], firing: bool) -> bool:
    if check.baseline is not None:  # judged against the entity's own usual level (evaluate.py)
        return seen.get("judged") == "firing"
    value = seen.get("value")
    if value is None:  # only reached for no_data: fire
        return True
    if firing and check.recovery_threshold is not None:
        return check.breaches(value, check.recovery_threshold)
    return check.breaches(value)


def _step_alerts(check: Check, state: CheckState, observed: dict[str, dict[str, Any]],
                 t: dt.datetime) -> dict[str, dict[str, Any]]:
    """Step each alert; returns the alerts that recovered now, with their last observation."""
    gone: dict[str, dict[str, Any]] = {}
    for key in set(state.alerts) | set(observed):
        alert = state.alerts.get(key) or Alert(Status.OK)
        seen = observed.get(key)
        if seen is not None:
            alert.entity = seen
        firing = alert.status == Status.FIRING
        if check.baseline is not None and seen is None:
            # not judged at T (a quiet hour, too young, or not read): neither a breach nor clean
            if alert.status != Status.OK:
                state.alerts[key] = alert
            continue
        if seen is not None and _breaching(check, seen, firing):
            alert.breaches, alert.cleans = alert.breaches + 1, 0
            if not firing and alert.breaches >= check.for_runs:
                alert.status, alert.since = Status.FIRING, _iso(t)
            elif alert.status == Status.OK:
                alert.status, alert.since = Status.PENDING, _iso(t)
            state.alerts[key] = alert
            continue
        alert.breaches = 0
        alert.cleans = alert.cleans + 1 if firing else 0
        if firing and alert.cleans < check.clear_runs:
            state.alerts[key] = alert  # clean, but not yet for clear_runs evaluations in a row
            continue
        state.alerts.pop(key, None)
        if firing:
            gone[key] = {**(alert.entity or {"id": key, "name": key}), "value": seen.get("value") if seen else None}
    return gone


def _roll_up(state: CheckState, t: dt.datetime) -> str | None:
    """The check's status from its alerts; returns when the episode that just ended began."""
    episode_start = state.firing_since
    statuses = {a.status for a in state.alerts.values()}
    status = Status.FIRING if Status.FIRING in statuses else Status.PENDING if statuses else Status.OK
    if status != state.status:
        state.since = _iso(t)
        state.firing_since = _iso(t) if status == Status.FIRING else None
    state.status = status
    return episode_start


def _announce(check: Check, state: CheckState, gone: dict[str, dict[str, Any]], silences: Sequence[Silence],
              t: dt.datetime, episode_start: str | None) -> Notification | None:
    """Diff what is firing against what people were told, and choose the event."""
    announced = set(state.announced)
    firing_now = {k for k, a in state.alerts.items() if a.status == Status.FIRING}
    quiet = {k for k in firing_now if any(silence_covers(s, k, t) for s in silences)}
    new = firing_now - quiet - announced
    recovered = announced - firing_now
    told = (announced & firing_now) | new     # what people know is firing after this evaluation
    event = _choose_event(check, state, announced, new, recovered, told, quiet, t)

    note = None
    if event:
        acked = {"by": state.acknowledged_by, "at": state.acknowledged_at} if state.acknowledged_by else None
        note = Notification(
            event, channels(check, event, state.escalated),
            new=_ranked(check, state, new), firing=_ranked(check, state, told),
            recovered=sorted((gone[k] for k in recovered if k in gone), key=lambda e: str(e.get("name"))),
            firing_since=episode_start if event == RESOLVE else state.firing_since, acknowledged=acked)
    if event == RESOLVE or not told:
        state.announced, state.last_notified_at, state.escalated = [], None, False
        state.acknowledged_by = state.acknowledged_at = None  # a later trigger starts unacknowledged
    else:
        state.announced = sorted(told)
        if event:
            state.last_notified_at = _iso(t)
    return note


def _choose_event(check: Check, state: CheckState, announced: set, new: set, recovered: set, told: set,
                  quiet: set, t: dt.datetime) -> Event | None:
    event = None
    if new and not announced:
        event = TRIGGER
    elif announced and not told:
        event = RESOLVE
    elif new or recovered:
        event = UPDATE
    elif told - quiet and check.repeat_after is not None and not state.acknowledged_by:
        last = _time(state.last_notified_at)
        if last is None or t - last >= check.repeat_after:
            event = REMINDER  # never while acknowledged: someone is on it
    if (event in (None, REMINDER, TRIGGER, UPDATE) and told - quiet and check.escalate_after is not None
            and not state.escalated and not state.acknowledged_by
            and t - _time(state.firing_since) >= check.escalate_after):
        state.escalated = True
        event = event if event in (TRIGGER, UPDATE) else ESCALATE
    return event


def _ranked(check: Check, state: CheckState, keys) -> list[dict[str, Any]]:
    found = [state.alerts[k].entity for k in keys]
    return sorted(found, key=lambda e: (check.worst_first_key(e["value"]) if e.get("value") is not None
                                        else float("-inf"), str(e.get("name")), str(e.get("id"))))
