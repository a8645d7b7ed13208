"""Jinja2 filters of the console's pages: times, ages, values with their units."""

from __future__ import annotations

import datetime as dt
from typing import Any

from loyalty_checks.text import format_duration, format_threshold, format_time, format_value
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
    get = check_or_alert.get if isinstance(check_or_alert, dict) else lambda k: getattr(check_or_alert, k)
    learned = get("baseline")
    if learned:  # a learned threshold: in words (text.rule_text)
        tail = learned["tail"] if isinstance(learned, dict) else learned.tail
        return f"far {'below' if get('comparison') == '<' else 'above'} its usual level (p < {tail:g})"
    return format_threshold(get("comparison"), get("threshold"), get("unit"))


def duration(delta: dt.timedelta | None) -> str:
    return format_duration(delta) if delta is not None else "—"


def thousands(n: int | None) -> str:
    return f"{n:,}" if n is not None else "—"


FILTERS = {"time": format_time, "ago": ago, "value": value, "threshold": threshold, "duration": duration,
           "thousands": thousands}
