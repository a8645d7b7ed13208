"""Jinja2 filters of the console's pages: times, ages, values with their units."""

from __future__ import annotations

import datetime as dt
from typing import Any

from loyalty_checks.text import format_duration, format_time, format_value, rule_text
from loyalty_checks.units import stored_time

_parse = stored_time


def ago(t: dt.datetime | str | None, now: dt.datetime | None = None) -> str:
    """'3h 5m ago', 'in 2h' (planned), '—'."""
    t = _parse(t)
    if t is None:
        return "—"
    delta = (now or dt.datetime.now(dt.timezone.utc)) - t
    if abs(delta.total_seconds()) < 60:
        return "just now"
    text = format_duration(abs(delta))
    return f"{text} ago" if delta.total_seconds() > 0 else f"in {text}"


def value(v: float | None, unit: str = "") -> str:
    return format_value(v, unit)


def threshold(check_or_alert: Any) -> str:
    return rule_text(check_or_alert)


def duration(delta: dt.timedelta | None) -> str:
    return format_duration(delta) if delta is not None else "—"


def thousands(n: int | None) -> str:
    return f"{n:,}" if n is not None else "—"


FILTERS = {"time": format_time, "ago": ago, "value": value, "threshold": threshold, "duration": duration,
           "thousands": thousands}
