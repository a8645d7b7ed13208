"""Show a captured Slack or PagerDuty request as a person would read it in a terminal."""

from __future__ import annotations

import html
import json
import textwrap
from typing import Any


def _mrkdwn(text: str) -> str:
    """Slack mrkdwn to plain terminal text (entities back to characters)."""
    return html.unescape(text)


def _slack(body: dict[str, Any]) -> list[str]:
    lines = []
    for block in body.get("blocks") or []:
        kind = block["type"]
        if kind == "header":
            lines.append(block["text"]["text"])
            lines.append("─" * min(60, len(block["text"]["text"]) + 2))
        elif kind == "section":
            if "text" in block:
                lines.extend(_mrkdwn(block["text"]["text"]).split("\n"))
            if "fields" in block:
                lines.append("   ".join(_mrkdwn(f["text"]).replace("\n", ": ", 1) for f in block["fields"]))
        elif kind == "actions":
            lines.extend(f"[{e['text']['text']}] {e['url']}" for e in block["elements"] if "url" in e)
        elif kind == "context":
            lines.append(" · ".join(_mrkdwn(e.get("text", "")) for e in block["elements"]))
    return lines or [body.get("text", "")]


def _pagerduty(body: dict[str, Any]) -> list[str]:
    payload = body.get("payload") or {}
    details = payload.get("custom_details") or {}
    lines = [f"{body.get('event_action', '?').upper()}  dedup_key={body.get('dedup_key')}"
             f"  severity={payload.get('severity')}",
             f"summary: {payload.get('summary')}"]
    if body.get("event_action") == "trigger":
        for key in ("value_text", "threshold", "window", "evaluated_at", "error"):
            if details.get(key) is not None:
                lines.append(f"{key}: {details[key]}")
        for e in details.get("entities") or []:
            lines.append(f"  - {e['name']} ({e['id']}): {e['value']}")
        if details.get("entities_more"):
            lines.append(f"  +{details['entities_more']} more")
        lines.extend(f"link: {link['text']} {link['href']}" for link in body.get("links") or [])
    return lines


def render(request: dict[str, Any]) -> str:
    path, body = request["path"], request["body"]
    if path.startswith("/pagerduty"):
        title, lines = f"PagerDuty Events v2 (POST {path})", _pagerduty(body)
    elif path.startswith("/slack"):
        title, lines = f"Slack #{path.rsplit('/', 1)[-1]} (POST {path})", _slack(body)
    else:
        title, lines = f"POST {path}", json.dumps(body, indent=2).split("\n")
    return f"\n  ┌ {title}\n" + "\n".join(textwrap.indent(line, "  │ ") if line else "  │" for line in lines)
