"""Formatting shared by the notifications: values, times, and Slack-safe text."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from loyalty_checks.units import stored_time

# Slack's escapes: mentions (<!channel>) and links (<url|x>) need < and >.
_SLACK_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": " ", "\r": " ", "\t": " "})
# Slack mrkdwn has no escape for its formatting characters, so database text gets
# look-alikes where one could open or close bold, italic, strike or code; one inside a
# word (loyalty.expire_points) cannot, and stays.
_LOOKALIKE = {"*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ"}
_FORMATTING = re.compile(r"`|(?<![^\W_])[*_~]|[*_~](?![^\W_])")
NAME_MAX = 80


def slack_escape(text: Any, limit: int = NAME_MAX) -> str:
    """Database text made inert for Slack mrkdwn and cut to `limit` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = _FORMATTING.sub(lambda m: _LOOKALIKE[m.group()], text)
    return text.translate(_SLACK_ENTITIES)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_value(value: float | None, unit: str) -> str:
    """A metric value as people read it: ratios as percentages, hours with one decimal."""
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "h":
        return f"{value:.1f} h"
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    return f"{text} {unit}".strip()


def format_threshold(comparison: str, threshold: float, unit: str) -> str:
    return f"{comparison} {format_value(threshold, unit)}"


def rule_text(check: Any) -> str:
    """When a check fires, in words: `> 5 ms`; a baseline's `far below its usual level (p < 0.001)`.
    `check` is a catalog Check or the console API's dict of one."""
    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

    learned = get(check, "baseline")
    if not learned:
        return format_threshold(get(check, "comparison"), get(check, "threshold"), get(check, "unit"))
    side = "below" if get(check, "comparison") == "<" else "above"
    return f"far {side} its usual level (p < {get(learned, 'tail'):g})"


def format_time(t: dt.datetime | str | None) -> str:
    if t is None:
        return "—"
    t = stored_time(t)
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def format_duration(delta: dt.timedelta) -> str:
    """'1d 2h 5m'; under a minute, seconds ('30s')."""
    if 0 < delta.total_seconds() < 60:
        return f"{int(delta.total_seconds())}s"
    minutes = int(delta.total_seconds() // 60)
    days, rem = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rem, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes or not (days or hours) else ""]
    return " ".join(p for p in parts if p)
