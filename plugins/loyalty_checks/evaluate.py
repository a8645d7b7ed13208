"""Compare a measurement with the check's threshold: the threshold branch's logic.

Pure functions, no I/O: a measurement (from measure.py) and a check (from the
catalog) give an Evaluation with a status and the breaching entities, worst first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loyalty_checks.catalog import Check

FIRING, OK, NO_DATA, ERROR = "firing", "ok", "no_data", "error"


@dataclass(frozen=True)
class Evaluation:
    check_id: str
    status: str                      # firing | ok | no_data
    value: float | None              # the check's value; for entity checks the worst entity's
    threshold: float
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


def evaluate(check: Check, measurement: dict[str, Any]) -> Evaluation:
    """Decide firing / ok / no data for one measurement of `check`."""
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
