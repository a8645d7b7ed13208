"""Notification content: escaping of database text, caps, limits, PagerDuty fields."""

from __future__ import annotations

import json

import pytest

from loyalty_checks.catalog import catalog
from loyalty_checks.messages import Notice, dedup_key, pagerduty_event, slack_message
from loyalty_checks.text import format_duration, format_value, slack_escape
from tests.sql.rows import MIN, T

HOSTILE = "<!channel> <!here> <@U123> <https://evil.example|click me> *bold* _it_ ~strike~ `code` & :tada: 🍔"


def notice(check_id="rate_limit_spikes", event="trigger", entities=(), value=150.0, error=None):
    cat = catalog()
    evaluation = {"value": value, "entities": list(entities), "entities_total": len(entities) + 5,
                  "error": error}
    decided = {"event": event, "channels": ["slack"], "new": list(entities), "recovered": [],
               "firing": list(entities) if event != "resolve" else [],
               "firing_since": (T - 90 * MIN).isoformat()}
    return Notice(check=cat.check(check_id), event=event, t=T, evaluation=evaluation,
                  dag_id="loyalty_p1_checks", run_url="http://af/dags/x/runs/r",
                  runbook_url=cat.runbook_link(check_id), entity_cap=cat.entity_cap, decided=decided)


def test_slack_escape_neutralises_mentions_links_and_formatting():
    escaped = slack_escape(HOSTILE, limit=1000)
    for dangerous in ("<!channel>", "<!here>", "<@U123>", "<https://", "*bold*", "_it_", "~strike~", "`code`"):
        assert dangerous not in escaped
    assert "&lt;!channel&gt;" in escaped and "&amp;" in escaped and "🍔" in escaped
    assert slack_escape("x" * 10_000) == "x" * 79 + "…"


def test_entities_worst_first_capped_with_more_and_escaped():
    entities = [{"id": str(i), "name": f"{HOSTILE} {i}", "value": 200 - i, "merchant_name": "M*"}
                for i in range(25)]
    body = slack_message(notice(entities=entities))
    text = body["blocks"][3]["text"]["text"]
    lines = text.split("\n")
    assert lines[0] == "*Firing stores (25), worst first*"
    assert lines[1].startswith("1. &lt;!channel&gt;") and lines[1].endswith("(M∗) — 200 per minute")
    assert lines[-1] == "+15 more" and len(lines) == 12
    dumped = json.dumps(body)
    assert "<!channel>" not in dumped and "<https://evil" not in dumped


def test_slack_limits_hold_for_huge_input():
    entities = [{"id": str(i), "name": "n" * 10_000, "value": 1000.0} for i in range(10_000)]
    body = slack_message(notice(entities=entities))
    assert len(body["blocks"]) <= 50
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    for block in body["blocks"]:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
    assert len(body["text"]) <= 3000


def test_pagerduty_event_fields():
    entities = [{"id": "7", "name": "Store 7", "value": 150.0, "merchant_name": "Acme"}] * 12
    event = pagerduty_event(notice("expiration_task_stale", entities=entities, value=31.25))
    assert event["dedup_key"] == "loyalty/expiration_task_stale"
    assert event["severity"] == "critical" and event["action"] == "trigger"
    assert event["summary"] == "[P0] expiration_task_stale: Point expiration task stale — 31.2 h (threshold > 26.0 h)"
    details = event["custom_details"]
    assert details["value"] == 31.25 and details["threshold"] == 26.0
    assert details["evaluated_at"] == "2026-11-23T08:00:00+00:00"
    assert len(details["entities"]) == 10 and details["entities_more"] == 2
    assert set(details["entities"][0]) == {"id", "name", "value"}
    assert event["links"][0]["href"].endswith("docs/runbooks.md#expiration_task_stale")


@pytest.mark.parametrize("event,action,key", [
    ("trigger", "trigger", "loyalty/google_wallet_down"),
    ("resolve", "resolve", "loyalty/google_wallet_down"),
    ("error", "trigger", "loyalty/google_wallet_down/error"),
    ("error_resolve", "resolve", "loyalty/google_wallet_down/error"),
])
def test_pagerduty_actions_and_dedup_keys(event, action, key):
    built = pagerduty_event(notice("google_wallet_down", event=event, error="QueryCanceled: timeout"))
    assert (built["action"], built["dedup_key"]) == (action, key)
    assert dedup_key("google_wallet_down", event) == key
    assert len(built["summary"]) <= 1024


def test_error_message_is_escaped_and_says_state_is_unchanged():
    body = slack_message(notice(event="error", error="syntax error near <!channel>"))
    assert body["text"] == "[P1] CHECK FAILED: Rate limit spikes could not be evaluated"
    text = body["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt;" in text and "alert state is unchanged" in text


def test_resolve_says_how_long_it_fired():
    body = slack_message(notice(event="resolve", value=12.0))
    assert body["text"] == "[P1] RESOLVED: Rate limit spikes after 1h 30m — 12 per minute (threshold > 100 per minute)"


@pytest.mark.parametrize("value,unit,text", [
    (0.0312, "ratio", "3.1%"), (26.04, "h", "26.0 h"), (5, "cards", "5 cards"), (101.5, "per minute", "101.50 per minute"),
    (None, "ratio", "no data"),
])
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


def test_format_duration():
    assert format_duration(T - T) == "0m"
    assert format_duration((T + 3 * 24 * 60 * MIN + 61 * MIN) - T) == "3d 1h 1m"
