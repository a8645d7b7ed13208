"""Durations, times and schedules: one parser each, for the catalog, the CLIs, the console
and the tests. Pure; ValueError names what was expected (callers add where it came from).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Any, Iterator

UTC = dt.timezone.utc
DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
CRON_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
                "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}


def duration(value: Any) -> dt.timedelta:
    """'5m' -> timedelta(minutes=5) (a timedelta passes through); else ValueError."""
    if isinstance(value, dt.timedelta):
        return value
    m = DURATION.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"expected a duration like 30s, 5m, 1h, 7d, got {value!r}")
    return dt.timedelta(**{DURATION_UNITS[m.group(2)]: int(m.group(1))})


def duration_text(delta: dt.timedelta | None) -> str | None:
    """A duration as the catalog writes it: 30s, 5m, 4h, 24h, 7d."""
    if delta is None:
        return None
    s = int(delta.total_seconds())
    if s % 86400 == 0 and s > 2 * 86400:
        return f"{s // 86400}d"
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60}m"
    return f"{s}s"


def hour_floor(t: dt.datetime) -> dt.datetime:
    """The start of t's whole UTC hour."""
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def parse_time(text: Any) -> dt.datetime:
    """An aware UTC datetime from ISO 8601 text (UTC when it has no offset); else ValueError."""
    try:
        t = dt.datetime.fromisoformat(text.strip()) if isinstance(text, str) else None
    except ValueError:
        t = None
    if t is None:
        raise ValueError(f"expected an ISO 8601 time like 2026-11-16T00:00:00+00:00, got {text!r}")
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def stored_time(value: str | dt.datetime | None) -> dt.datetime | None:
    """A time the package wrote (isoformat, in JSON or XCom) back as a datetime; None stays None."""
    if value is None or value == "":
        return None
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def cron_times(schedule: str, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """Every scheduled T of a cron schedule (UTC) in (start, end], in order: the DAG's runs."""
    from croniter import croniter

    it = croniter(CRON_PRESETS.get(schedule, schedule), start.astimezone(UTC))
    while True:
        t = it.get_next(dt.datetime).astimezone(UTC)
        if t > end:
            return
        yield t


@lru_cache(maxsize=32)
def cron_interval(schedule: str) -> dt.timedelta | None:
    """The shortest time between two runs of a cron schedule (P0 5 minutes, P1 an hour, P2 a
    week); None when it is not a cron expression."""
    from croniter import croniter

    try:
        it = croniter(CRON_PRESETS.get(schedule, schedule), dt.datetime(2026, 1, 1, tzinfo=UTC))
        fires = [it.get_next(dt.datetime) for _ in range(60)]
    except Exception:  # noqa: BLE001 - not a cron expression: nothing to compare with
        return None
    return min(b - a for a, b in zip(fires, fires[1:], strict=False))
