"""What a notification says: Slack Block Kit messages and PagerDuty Events v2 events.

Pure functions of the check (catalog), the decided notification (lifecycle.py), the
stored evaluation and the links; deliver.py sends what these return. Database text is
escaped for Slack, entity lists are capped worst first with "+N more", and nothing
personal is ever read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loyalty_checks.catalog import Check
from loyalty_checks.lifecycle import ERROR, ERROR_RESOLVE, ESCALATE, REMINDER, RESOLVE, SCALAR, TRIGGER, UPDATE
from loyalty_checks.text import (
    format_duration,
    format_time,
    format_value,
    rule_text,
    slack_escape,
    truncate,
)

PAGERDUTY_SUMMARY_MAX = 1024
SLACK_TEXT_MAX = 3000          # a section block's text limit
SLACK_HEADER_MAX = 150
BASELINE_KEYS = ("expected", "band", "label", "window_hours", "p_value")  # a baseline entity's, in PagerDuty's details


@dataclass(frozen=True)
class Notice:
    """Everything a message needs about one decided notification."""
    check: Check
    event: str                      # trigger | update | reminder | escalate | resolve | error | error_resolve
    t: dt.datetime                  # evaluation time T
    evaluation: dict[str, Any]      # state.load_evaluation() row
    dag_id: str
    run_url: str
    runbook_url: str
    entity_cap: int
    decided: dict[str, Any] | None = None  # lifecycle.Notification.to_dict(): new / firing / recovered
    http_timeout: float = 10.0      # seconds per request: the catalog's http_timeout of the check's DAG

    def entities(self, part: str) -> list[dict[str, Any]]:
        """The alerts of one part (new, firing, recovered), worst first, without the scalar one."""
        return [e for e in (self.decided or {}).get(part, []) if e.get("id") != SCALAR]

    @property
    def value_text(self) -> str:
        return format_value(self.evaluation.get("value"), self.check.unit)

    @property
    def threshold_text(self) -> str:
        return rule_text(self.check)

    @property
    def value_summary(self) -> str:
        """The value beside its rule: `12 ms (threshold > 5 ms)`; a baseline check's worst
        entity against its usual level (`Main St: 3 transactions in the last 2 h, usual ...`)."""
        if self.check.baseline is None:
            return f"{self.value_text} (threshold {self.threshold_text})"
        worst = (self.evaluation.get("details") or {}).get("worst")
        if not worst:
            return f"{self.value_text} ({self.threshold_text})"
        return f"{worst['name']}: {baseline_text(worst, self.check.unit)}"

    @property
    def window_text(self) -> str:
        if self.check.baseline is not None:
            return f"last 1–{format_duration(self.check.baseline.window)}, per {self.check.entity}"
        return f"last {self.check.window_text}" if self.check.window_text else "latest data"

    @property
    def firing_for(self) -> str | None:
        since = (self.decided or {}).get("firing_since")
        return format_duration(self.t - dt.datetime.fromisoformat(since)) if since else None


def baseline_text(e: dict[str, Any], unit: str) -> str:
    """One entity against its usual level: `3 transactions in the last 2 h, usual for Tue
    14:00–16:00 is 41 (22–63)` (the band: nine windows in ten fall in it)."""
    one = e.get("value") == 1 and unit.endswith("s")  # 1 transaction
    text = f"{format_value(e.get('value'), unit[:-1] if one else unit)} in the last {e['window_hours']} h"
    if e.get("band") is None:
        return f"{text}, usual for {e['label']} is {e['expected']:.0f} (too few to judge)"
    low, high = e["band"]
    return f"{text}, usual for {e['label']} is {e['expected']:.0f} ({low}–{high})"


# ---------------------------------------------------------------- Slack

_HEADLINE = {
    TRIGGER: "🔴 {sev} FIRING · {title}",
    UPDATE: "🟠 {sev} CHANGED · {title}",
    REMINDER: "🔁 {sev} STILL FIRING · {title}",
    ESCALATE: "📟 {sev} ESCALATED TO PAGERDUTY · {title}",
    RESOLVE: "✅ RESOLVED · {title}",
    ERROR: "⚠️ {sev} CHECK FAILED · {title}",
    ERROR_RESOLVE: "✅ CHECK RUNS AGAIN · {title}",
}


def _entity_list(n: Notice, part: str, label: str, order: str = "") -> str | None:
    found = n.entities(part)
    if not found:
        return None
    lines = [f"*{label} ({len(found)}){order}*"]
    for i, e in enumerate(found[: n.entity_cap], 1):
        name = slack_escape(e.get("name", e["id"]))
        if e.get("merchant_name"):
            name += f" ({slack_escape(e['merchant_name'])})"
        if n.check.baseline is not None and e.get("window_hours"):
            lines.append(f"{i}. {name}: {baseline_text(e, n.check.unit)}")
            continue
        value = f" — {format_value(e['value'], n.check.unit)}" if e.get("value") is not None else ""
        lines.append(f"{i}. {name}{value}")
    if len(found) > n.entity_cap:
        lines.append(f"+{len(found) - n.entity_cap} more")
    return truncate("\n".join(lines), SLACK_TEXT_MAX)


def _fields(n: Notice, first: str = "Value") -> list[dict[str, str]]:
    fields = [
        (first, n.value_summary) if n.check.baseline is None else ("Fires when", n.threshold_text),
        ("Window", n.window_text),
        ("Evaluated at (T)", format_time(n.t)),
        ("Check", f"`{n.check.id}`"),
    ]
    return [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]


def _silence_lines(n: Notice) -> str | None:
    silences = n.evaluation.get("silences") or []
    if not silences:
        return None
    lines = []
    for s in silences:
        what = "the whole check" if s.get("entity_id") is None else f"{n.check.entity or 'entity'} {slack_escape(s['entity_id'])}"
        lines.append(f"🔕 Silenced: {what} until {format_time(s['ends_at'])} by {slack_escape(s['author'])}"
                     f" — {slack_escape(s['reason'], 200)}")
    return truncate("\n".join(lines), SLACK_TEXT_MAX)


def _section(text: str | None) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}] if text else []


# The buttons of an alert message posted through the Web API (shared/spec/slack-actions.md).
ACK = "loyalty_ack"
SILENCE_BUTTONS = (("loyalty_silence_1h", "Silence 1h"), ("loyalty_silence_4h", "Silence 4h"),
                   ("loyalty_silence_24h", "Silence 24h"))
ACTIONABLE = (TRIGGER, UPDATE, REMINDER, ESCALATE)


def actor_text(actor: str) -> str:
    """`slack:U123` as a Slack mention, anyone else (a console user) as written."""
    return f"<@{actor.removeprefix('slack:')}>" if actor.startswith("slack:") else slack_escape(actor)


def acknowledged_line(by: str, at: dt.datetime | str) -> str:
    at = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
    return f"Acknowledged by {actor_text(by)} at {at.astimezone(dt.timezone.utc):%H:%M} UTC"


def silenced_line(by: str, until: dt.datetime) -> str:
    return f"Silenced until {format_time(until)} by {actor_text(by)}"


def action_buttons(check_id: str, console_url: str | None) -> list[dict[str, Any]]:
    """Acknowledge, Silence 1h / 4h / 24h (value: the check id), and the check's console page."""
    buttons: list[dict[str, Any]] = [
        {"type": "button", "action_id": ACK, "text": {"type": "plain_text", "text": "Acknowledge"},
         "style": "primary", "value": check_id}]
    buttons += [{"type": "button", "action_id": aid, "text": {"type": "plain_text", "text": label}, "value": check_id}
                for aid, label in SILENCE_BUTTONS]
    if console_url:
        buttons.append({"type": "button", "action_id": "loyalty_console", "text": {"type": "plain_text",
                        "text": "Console"}, "url": console_url})
    return buttons


def acted(body: dict[str, Any], line: str, used: str) -> dict[str, Any]:
    """A posted message after an action (chat.update): the button just used is gone (a
    silence takes all three silence buttons), and a context line says who did what."""
    gone = {used} | ({aid for aid, _ in SILENCE_BUTTONS} if used in dict(SILENCE_BUTTONS) else set())
    blocks = []
    for block in body.get("blocks") or []:
        if block.get("type") == "actions":
            block = {**block, "elements": [e for e in block["elements"] if e.get("action_id") not in gone]}
        blocks.append(block)
    at = next((i for i, b in enumerate(blocks) if b.get("type") == "actions"), len(blocks))
    blocks.insert(at, {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]})
    return {**body, "blocks": blocks}


def slack_message(n: Notice, interactive: bool = False, console_url: str | None = None) -> dict[str, Any]:
    """The Slack body (text + Block Kit) for one notice; `interactive` (posted through the
    Web API): the alert events carry the action buttons in the block `loyalty/<check id>`."""
    c, kind = n.check, n.check.entity or "entity"
    headline = _HEADLINE[n.event].format(sev=c.severity, title=c.title)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(headline, SLACK_HEADER_MAX)}},
    ]
    value = n.value_summary
    if n.event == TRIGGER:
        text = f"[{c.severity}] FIRING: {c.title} — {value}"
        blocks += _section(c.description)
        blocks.append({"type": "section", "fields": _fields(n)})
        blocks += _section(_entity_list(n, "firing", f"Firing {kind}s", ", worst first"))
        blocks += _section(f"*Action*\n{c.action}")
    elif n.event in (UPDATE, REMINDER, ESCALATE):
        lasted = f" for {n.firing_for}" if n.firing_for else ""
        text = {UPDATE: f"[{c.severity}] CHANGED: {c.title} — {value}",
                REMINDER: f"[{c.severity}] STILL FIRING{lasted}: {c.title} — {value}",
                ESCALATE: f"[{c.severity}] ESCALATED TO PAGERDUTY after firing{lasted}: {c.title} — {value}"}[n.event]
        blocks += _section(f"Firing{lasted}.")
        blocks.append({"type": "section", "fields": _fields(n)})
        if n.event == UPDATE:
            blocks += _section(_entity_list(n, "new", f"New {kind}s"))
            blocks += _section(_entity_list(n, "recovered", f"Recovered {kind}s"))
        blocks += _section(_entity_list(n, "firing", f"Firing {kind}s", ", worst first"))
        blocks += _section(f"*Action*\n{c.action}")
    elif n.event == RESOLVE:
        lasted = f" after {n.firing_for}" if n.firing_for else ""
        text = f"[{c.severity}] RESOLVED: {c.title}{lasted} — {value}"
        blocks += _section(f"No longer firing{lasted}. {c.metric}: {n.value_text}.")
        blocks.append({"type": "section", "fields": _fields(n, "Value now")})
        blocks += _section(_entity_list(n, "recovered", f"Recovered {kind}s"))
    elif n.event == ERROR:
        error = slack_escape(n.evaluation.get("error") or "unknown error", 500)
        text = f"[{c.severity}] CHECK FAILED: {c.title} could not be evaluated"
        blocks += _section("The check could not be evaluated after its retries, so this alert is blind"
                           f" until it runs again. Its alert state is unchanged.\n*Error*: {error}")
        blocks.append({"type": "section", "fields": _fields(n)[2:]})
    else:  # ERROR_RESOLVE
        text = f"[{c.severity}] CHECK RUNS AGAIN: {c.title} — {n.value_text}"
        blocks += _section(f"The check evaluates again: {value}.")
    blocks += _section(_silence_lines(n))
    acknowledged = (n.decided or {}).get("acknowledged")
    if acknowledged:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": acknowledged_line(
            acknowledged["by"], acknowledged["at"])}]})
    links = [{"type": "button", "text": {"type": "plain_text", "text": "Runbook"}, "url": n.runbook_url},
             {"type": "button", "text": {"type": "plain_text", "text": "Airflow run"}, "url": n.run_url}]
    if interactive and n.event in ACTIONABLE:
        buttons = [b for b in action_buttons(c.id, console_url) if not (acknowledged and b.get("action_id") == ACK)]
        blocks.append({"type": "actions", "block_id": f"loyalty/{c.id}", "elements": buttons + links})
    else:
        blocks.append({"type": "actions", "elements": links})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                   f"{c.severity} · `{c.id}` · {n.dag_id}"}]})
    return {"text": truncate(text, SLACK_TEXT_MAX), "blocks": blocks}


# ---------------------------------------------------------------- PagerDuty

def dedup_key(check_id: str, event: str) -> str:
    """One incident per check; a check that cannot run has its own incident."""
    return f"loyalty/{check_id}/error" if event in (ERROR, ERROR_RESOLVE) else f"loyalty/{check_id}"


def pagerduty_event(n: Notice) -> dict[str, Any]:
    """Keyword arguments for the provider's `prepare_event_data`.

    trigger, update and escalate all `trigger` the check's one incident (PagerDuty adds
    them to the open incident and refreshes its details); resolve resolves it.
    """
    c = n.check
    action = "resolve" if n.event in (RESOLVE, ERROR_RESOLVE) else "trigger"
    firing = n.entities("firing")
    severity = "critical" if c.severity == "P0" else "error"
    if n.event in (ERROR, ERROR_RESOLVE):
        summary = f"[{c.severity}] {c.id}: {c.title} could not be evaluated — the check is blind"
        severity = "error"
    else:
        summary = f"[{c.severity}] {c.id}: {c.title} — {n.value_summary}"
        if firing and c.entity and n.event != RESOLVE:
            summary += f", {len(firing)} {c.entity}{'s' if len(firing) != 1 else ''}"
    details: dict[str, Any] = {
        "check_id": c.id,
        "title": c.title,
        "metric": c.metric,
        "value": n.evaluation.get("value"),
        "value_text": n.value_text,
        "threshold": c.threshold,
        **({"baseline": {"tail": c.baseline.tail, "season": c.baseline.season}} if c.baseline else {}),
        "comparison": c.comparison,
        "window": c.window_text,
        "evaluated_at": n.t.isoformat(),
        "entities": [{"id": e["id"], "name": truncate(str(e.get("name", "")), 200), "value": e.get("value"),
                      **{k: e[k] for k in BASELINE_KEYS if k in e}}
                     for e in firing[: n.entity_cap]],
        "entities_more": max(0, len(firing) - n.entity_cap),
        "action": c.action,
        "runbook_url": n.runbook_url,
        "airflow_run_url": n.run_url,
    }
    if n.event == ERROR:
        details["error"] = truncate(n.evaluation.get("error") or "", 1000)
    if n.event in (UPDATE, ESCALATE):
        details["event"] = n.event
        details["firing_for"] = n.firing_for
    return {
        "summary": truncate(summary, PAGERDUTY_SUMMARY_MAX),
        "severity": severity,
        "source": c.source,  # the connection the check read
        "action": action,
        "dedup_key": dedup_key(c.id, n.event),
        "custom_details": details,
        "component": "loyalty",
        "group": n.dag_id,
        "class_type": c.id,
        "links": [{"href": n.runbook_url, "text": f"Runbook: {c.id}"},
                  {"href": n.run_url, "text": "Airflow run"}],
    }
