"""Compare a measurement with the check's threshold: the threshold branch's logic.

Pure functions, no I/O: a measurement (from measure.py) and a check (from the
catalog) give an Evaluation with a status and the breaching entities, worst first.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from loyalty_checks.catalog import Check
from loyalty_checks.units import hour_floor

FIRING, OK, NO_DATA, ERROR = "firing", "ok", "no_data", "error"


@dataclass(frozen=True)
class Evaluation:
    check_id: str
    status: str                      # firing | ok | no_data
    value: float | None              # the check's value; for entity checks the worst entity's
    threshold: float | None          # None: a learned baseline (each entity's expected and band)
    comparison: str
    entities: list[dict[str, Any]] = field(default_factory=list)  # breaching, worst first
    entities_total: int = 0          # entities measured (breaching or not)
    details: dict[str, Any] = field(default_factory=dict)
    all_entities: list[dict[str, Any]] = field(default_factory=list)  # every measured entity (hysteresis)

    @property
    def firing(self) -> bool:
        return self.status == FIRING

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "all_entities"}


@dataclass(frozen=True)
class MeasurementError:
    """The check could not be evaluated (SQL error, timeout, database down)."""
    check_id: str
    message: str
    status: str = ERROR


def evaluate(check: Check, measurement: dict[str, Any], t: dt.datetime | None = None,
             excluded: Mapping[str, Iterable[dt.datetime]] | None = None) -> Evaluation:
    """Decide firing / ok / no data for one measurement of `check` (a baseline check's as of
    T, its entities' `excluded` hours left out of their history)."""
    if check.baseline is not None:
        return _evaluate_baseline(check, measurement, t, excluded)
    if check.entity is None:
        value = measurement.get("value")
        if value is None:
            status = FIRING if check.no_data == "fire" else NO_DATA
        else:
            status = FIRING if check.breaches(value) else OK
        return Evaluation(check.id, status, value, check.threshold, check.comparison,
                          details=measurement.get("details") or {})

    measured = measurement.get("entities") or []
    ranked = sorted(measured, key=lambda e: (check.worst_first_key(e["value"]), e["name"], e["id"]))
    breaching = [e for e in ranked if check.breaches(e["value"])]
    worst = ranked[0]["value"] if ranked else None
    if not measured:
        status = FIRING if check.no_data == "fire" else NO_DATA
    else:
        status = FIRING if breaching else OK
    return Evaluation(check.id, status, worst, check.threshold, check.comparison,
                      entities=breaching, entities_total=len(measured), all_entities=ranked)


def judged_hour(t: dt.datetime) -> dt.datetime:
    """A baseline check judges the whole hours before T: T floored to the hour (UTC)."""
    return hour_floor(t)


def _evaluate_baseline(check: Check, measurement: dict[str, Any], t: dt.datetime | None,
                       excluded: Mapping[str, Iterable[dt.datetime]] | None) -> Evaluation:
    """Each entity against its own usual level (baseline.py): firing when its count in the
    judged window is improbable enough; worst (smallest p-value) first."""
    from loyalty_checks.baseline import judge_counts  # its statuses firing / ok are FIRING / OK here

    if t is None:
        raise ValueError(f"{check.id}: a baseline check is evaluated as of a time T")
    named = {e["id"]: e["name"] for e in measurement.get("entities") or []}
    hourly = measurement.get("hourly")
    if hourly is None or not named:
        status = NO_DATA
        return Evaluation(check.id, status, None, None, check.comparison)
    whole_check = (excluded or {}).get(None)
    if whole_check:  # a silence of the whole check: its hours are left out for every entity
        excluded = {key: set(whole_check) | set((excluded or {}).get(key, ())) for key in named}
    judged = judge_counts(check.baseline.settings(check.comparison), hourly, judged_hour(t), excluded)
    # Only the entities judged (firing or ok) are observations: the lifecycle leaves the others'
    # alerts as they are, as it does for an entity the SQL did not return.
    scored = sorted((observation(key, named[key], j) for key, j in judged.items() if j.status in (FIRING, OK)),
                    key=lambda e: (e["p_value"], e["name"], e["id"]))
    breaching = [e for e in scored if e["judged"] == FIRING]
    details = {"judged": dict(Counter(j.status for j in judged.values())), **({"worst": scored[0]} if scored else {})}
    return Evaluation(check.id, FIRING if breaching else OK, scored[0]["value"] if scored else None, None,
                      check.comparison, entities=breaching, entities_total=len(judged), details=details,
                      all_entities=scored)


def observation(key: str, name: str, j) -> dict[str, Any]:
    """One entity's judgement as an alert observation (value: its count in the judged window)."""
    out: dict[str, Any] = {"id": key, "name": name, "value": j.observed, "judged": j.status}
    if j.expected is not None:
        out.update(expected=round(j.expected, 2), window_hours=j.window_hours,
                   window_start=j.window_start.isoformat(), label=j.label)
    if j.band is not None:
        out.update(band=[int(j.band[0]), int(j.band[1])], p_value=float(f"{j.p_value:.4g}"))
    return out


def excluded_hours(check: Check, t: dt.datetime, firing: Iterable[tuple[dt.datetime, list[dict[str, Any]]]],
                   silences: Iterable[tuple[str | None, dt.datetime, dt.datetime]]) -> dict[str, set[dt.datetime]]:
    """The hours left out of each entity's history at T (shared/spec/baselines.md): the
    judged windows of its own firing evaluations before T, `firing` as (T_i, breaching
    entities), and the hours its silences touched, (entity_id or None for the whole
    check, starts_at, ends_at). The whole check's under the key None."""
    hour = dt.timedelta(hours=1)
    since = judged_hour(t) - check.baseline.span
    out: dict[str, set[dt.datetime]] = {}
    for at, entities in firing:
        end = judged_hour(at)
        for e in entities:
            start = dt.datetime.fromisoformat(e["window_start"]) if e.get("window_start") else end - hour
            out.setdefault(e["id"], set()).update(_hours(max(start, since), end))
    for entity_id, starts, ends in silences:
        first = max(judged_hour(starts), since)
        last = min(judged_hour(ends) + (hour if ends != judged_hour(ends) else dt.timedelta(0)), judged_hour(t))
        out.setdefault(entity_id, set()).update(_hours(first, last))
    return {k: v for k, v in out.items() if v}


def _hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    hour, out = dt.timedelta(hours=1), []
    while start < end:
        out.append(start)
        start += hour
    return out
