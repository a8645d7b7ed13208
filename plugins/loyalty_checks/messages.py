"""What a notification says: Slack Block Kit messages and PagerDuty Events v2 events.

Pure functions of the check (catalog), its stored evaluation and the links; the
delivery code sends what these return. Database text is escaped for Slack, entity
lists are capped worst first with "+N more", and nothing personal is ever read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loyalty_checks.catalog import Check
from loyalty_checks.state import ERROR_EVENT, ERROR_RESOLVE, RESOLVE, TRIGGER
from loyalty_checks.text import format_duration, format_threshold, format_time, format_value, slack_escape, truncate

PAGERDUTY_SUMMARY_MAX = 1024
SLACK_TEXT_MAX = 3000          # a section block's text limit
SLACK_HEADER_MAX = 150


@dataclass(frozen=True)
class Notice:
    """Everything a message needs about one decided notification."""
    check: Check
    event: str                      # trigger | resolve | error | error_resolve
    t: dt.datetime                  # evaluation time T
    evaluation: dict[str, Any]      # state.load_evaluation() row
    dag_id: str
    run_url: str
    runbook_url: str
    entity_cap: int

    @property
    def value_text(self) -> str:
        return format_value(self.evaluation.get("value"), self.check.unit)

    @property
    def threshold_text(self) -> str:
        return format_threshold(self.check.comparison, self.check.threshold, self.check.unit)

    @property
    def window_text(self) -> str:
        return f"last {self.check.window_text}" if self.check.window_text else "latest data"

    def entities(self) -> tuple[list[dict[str, Any]], int]:
        """The first `entity_cap` breaching entities (worst first) and how many more there are."""
        found = self.evaluation.get("entities") or []
        return found[: self.entity_cap], max(0, len(found) - self.entity_cap)


# ---------------------------------------------------------------- Slack

_HEADLINE = {
    TRIGGER: "🔴 {sev} FIRING · {title}",
    RESOLVE: "✅ RESOLVED · {title}",
    ERROR_EVENT: "⚠️ {sev} CHECK FAILED · {title}",
    ERROR_RESOLVE: "✅ CHECK RUNS AGAIN · {title}",
}


def _entity_lines(n: Notice) -> str | None:
    shown, more = n.entities()
    if not shown:
        return None
    kind = n.check.entity or "entity"
    total = len(n.evaluation.get("entities") or [])
    lines = [f"*Breaching {kind}s ({total} of {n.evaluation.get('entities_total') or total}), worst first*"]
    for i, e in enumerate(shown, 1):
        label = slack_escape(e.get("name", e["id"]))
        if e.get("merchant_name"):
            label += f" ({slack_escape(e['merchant_name'])})"
        lines.append(f"{i}. {label} — {format_value(e['value'], n.check.unit)}")
    if more:
        lines.append(f"+{more} more")
    return truncate("\n".join(lines), SLACK_TEXT_MAX)


def _fields(n: Notice) -> list[dict[str, str]]:
    fields = [
        ("Value" if n.event == TRIGGER else "Value now", f"{n.value_text} (threshold {n.threshold_text})"),
        ("Window", n.window_text),
        ("Evaluated at (T)", format_time(n.t)),
        ("Check", f"`{n.check.id}`"),
    ]
    return [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]


def slack_message(n: Notice) -> dict[str, Any]:
    """The Slack webhook body (text + Block Kit) for one notice."""
    sev = n.check.severity
    headline = _HEADLINE[n.event].format(sev=sev, title=n.check.title)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(headline, SLACK_HEADER_MAX)}},
    ]
    if n.event == TRIGGER:
        text = f"[{n.check.severity}] FIRING: {n.check.title} — {n.value_text} (threshold {n.threshold_text})"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": n.check.description}})
        blocks.append({"type": "section", "fields": _fields(n)})
        entity_text = _entity_lines(n)
        if entity_text:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": entity_text}})
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Action*\n{n.check.action}"}})
    elif n.event == RESOLVE:
        since = n.evaluation.get("fired_since")
        lasted = f" after {format_duration(n.t - since)}" if since else ""
        text = f"[{n.check.severity}] RESOLVED: {n.check.title}{lasted} — {n.value_text} (threshold {n.threshold_text})"
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                       "text": f"No longer firing{lasted}. {n.check.metric}: {n.value_text}."}})
        blocks.append({"type": "section", "fields": _fields(n)})
    elif n.event == ERROR_EVENT:
        error = slack_escape(n.evaluation.get("error") or "unknown error", 500)
        text = f"[{n.check.severity}] CHECK FAILED: {n.check.title} could not be evaluated"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text":
                       "The check could not be evaluated after its retries, so this alert is blind"
                       f" until it runs again. Its alert state is unchanged.\n*Error*: {error}"}})
        blocks.append({"type": "section", "fields": _fields(n)[2:]})
    else:  # ERROR_RESOLVE
        text = f"[{n.check.severity}] CHECK RUNS AGAIN: {n.check.title} — {n.value_text}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text":
                       f"The check evaluates again: {n.value_text} (threshold {n.threshold_text})."}})
    blocks.append({"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Runbook"}, "url": n.runbook_url},
        {"type": "button", "text": {"type": "plain_text", "text": "Airflow run"}, "url": n.run_url},
    ]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                   f"{n.check.severity} · `{n.check.id}` · {n.dag_id}"}]})
    return {"text": truncate(text, SLACK_TEXT_MAX), "blocks": blocks}


# ---------------------------------------------------------------- PagerDuty

def dedup_key(check_id: str, event: str) -> str:
    """One incident per check; a check that cannot run has its own incident."""
    return f"loyalty/{check_id}/error" if event in (ERROR_EVENT, ERROR_RESOLVE) else f"loyalty/{check_id}"


def pagerduty_event(n: Notice) -> dict[str, Any]:
    """Keyword arguments for the provider's `prepare_event_data`, plus the payload timestamp."""
    action = "trigger" if n.event in (TRIGGER, ERROR_EVENT) else "resolve"
    shown, more = n.entities()
    if n.event == ERROR_EVENT:
        summary = f"[P0] {n.check.id}: {n.check.title} could not be evaluated — the check is blind"
        severity = "error"
    else:
        summary = (f"[P0] {n.check.id}: {n.check.title} — {n.value_text}"
                   f" (threshold {n.threshold_text})")
        severity = "critical"
    details: dict[str, Any] = {
        "check_id": n.check.id,
        "title": n.check.title,
        "metric": n.check.metric,
        "value": n.evaluation.get("value"),
        "value_text": n.value_text,
        "threshold": n.check.threshold,
        "comparison": n.check.comparison,
        "window": n.check.window_text,
        "evaluated_at": n.t.isoformat(),
        "entities": [{"id": e["id"], "name": truncate(str(e.get("name", "")), 200), "value": e["value"]}
                     for e in shown],
        "entities_more": more,
        "action": n.check.action,
        "runbook_url": n.runbook_url,
        "airflow_run_url": n.run_url,
    }
    if n.event == ERROR_EVENT:
        details["error"] = truncate(n.evaluation.get("error") or "", 1000)
    return {
        "summary": truncate(summary, PAGERDUTY_SUMMARY_MAX),
        "severity": severity,
        "source": "loyalty_db",
        "action": action,
        "dedup_key": dedup_key(n.check.id, n.event),
        "custom_details": details,
        "component": "loyalty",
        "group": n.dag_id,
        "class_type": n.check.id,
        "links": [{"href": n.runbook_url, "text": f"Runbook: {n.check.id}"},
                  {"href": n.run_url, "text": "Airflow run"}],
    }
