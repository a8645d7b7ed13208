"""Slack alerts through the Web API (`slack_loyalty_alerts` of type `slack`): the DAGs post
with `chat.postMessage` over real HTTP to the local stand-in (the sink's `/api/`), the alert
messages carry the action buttons of shared/spec/slack-actions.md, each message's channel
and ts are kept in loyalty_monitoring.slack_messages, and the webhook type is unchanged.
"""

from __future__ import annotations

import json
import re
import warnings

from demo.embedded_pg import SLACK_ALERTS_CHANNEL, SLACK_BOT_TOKEN
from loyalty_checks.catalog import catalog
from loyalty_checks.messages import slack_message
from tests.sql.rows import MIN, H, T, merchant, store
from tests.test_dag_runs import P0, P1, RUNBOOK, expire_points_success, google_runs, run_url

POST = "/api/chat.postMessage"
CONSOLE = "http://localhost:8080/loyalty/checks"  # [api] base_url is unset in the tests
BUTTONS = ["loyalty_ack", "loyalty_silence_1h", "loyalty_silence_4h", "loyalty_silence_24h"]
SLACK_TS = re.compile(r"^\d{10}\.\d{6}$")


def posts(sink) -> list[dict]:
    """The chat.postMessage calls the sink answered, each checked for the bot token."""
    taken = sink.take(POST)
    assert all(r["authorization"] == f"Bearer {SLACK_BOT_TOKEN}" for r in taken)
    return taken


def stored(db) -> list[tuple]:
    return db.execute("SELECT channel_id, ts, check_id, evaluated_at, event, body"
                      " FROM loyalty_monitoring.slack_messages ORDER BY posted_at, ts").fetchall()


def action_ids(body: dict) -> list[str]:
    return [e.get("action_id") for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]
            if e.get("action_id")]


# ---------------------------------------------------------------- P0: trigger with buttons, resolve without

def test_p0_alert_posts_with_buttons_and_keeps_channel_and_ts(db, run_dag, sink, slack_web_api):
    expire_points_success(db, T - 31 * H, "first")
    google_runs(db, 0.1, 0.2)
    dr, states = run_dag(P0, T)
    assert dr.state == "success", states
    assert states["expiration_task_stale.notify_slack"] == "success"
    assert sink.take("/slack") == []  # no webhook

    [post] = posts(sink)
    body = post["body"]
    assert set(body) == {"channel", "text", "blocks"}
    assert body["channel"] == SLACK_ALERTS_CHANNEL
    assert body["text"] == "[P0] FIRING: Point expiration task stale — 31.0 h (threshold > 26.0 h)"
    url, runbook = run_url(P0, dr.run_id), f"{RUNBOOK}#expiration_task_stale"
    [actions] = [b for b in body["blocks"] if b["type"] == "actions"]
    assert actions == {"type": "actions", "block_id": "loyalty/expiration_task_stale", "elements": [
        {"type": "button", "action_id": "loyalty_ack", "text": {"type": "plain_text", "text": "Acknowledge"},
         "style": "primary", "value": "expiration_task_stale"},
        {"type": "button", "action_id": "loyalty_silence_1h", "text": {"type": "plain_text", "text": "Silence 1h"},
         "value": "expiration_task_stale"},
        {"type": "button", "action_id": "loyalty_silence_4h", "text": {"type": "plain_text", "text": "Silence 4h"},
         "value": "expiration_task_stale"},
        {"type": "button", "action_id": "loyalty_silence_24h", "text": {"type": "plain_text",
         "text": "Silence 24h"}, "value": "expiration_task_stale"},
        {"type": "button", "action_id": "loyalty_console", "text": {"type": "plain_text", "text": "Console"},
         "url": f"{CONSOLE}/expiration_task_stale"},
        {"type": "button", "text": {"type": "plain_text", "text": "Runbook"}, "url": runbook},
        {"type": "button", "text": {"type": "plain_text", "text": "Airflow run"}, "url": url},
    ]}
    # Apart from the buttons, the message is the webhook's, block for block.
    assert [b for b in body["blocks"] if b["type"] != "actions"] == [
        b for b in webhook_blocks(db, "expiration_task_stale", "trigger") if b["type"] != "actions"]
    assert body["blocks"][0] == {"type": "header", "text": {
        "type": "plain_text", "text": "🔴 P0 FIRING · Point expiration task stale"}}

    # The message's channel and ts, as Slack answered them, are kept with what was posted.
    ts = post["reply"]["ts"]
    assert post["reply"] == {"ok": True, "channel": SLACK_ALERTS_CHANNEL, "ts": ts} and SLACK_TS.match(ts)
    assert stored(db) == [(SLACK_ALERTS_CHANNEL, ts, "expiration_task_stale", T, "trigger",
                           {"text": body["text"], "blocks": body["blocks"]})]
    from loyalty_checks.store.actions import message

    assert message(db, SLACK_ALERTS_CHANNEL, ts)["body"] == {"text": body["text"], "blocks": body["blocks"]}

    # Resolved: a new message without the action buttons (nothing left to act on), kept too.
    expire_points_success(db, T + 7 * MIN, "second")
    dr, _ = run_dag(P0, T + 10 * MIN)
    [resolve] = posts(sink)
    body = resolve["body"]
    assert body["channel"] == SLACK_ALERTS_CHANNEL
    assert body["text"] == "[P0] RESOLVED: Point expiration task stale after 10m — 0.1 h (threshold > 26.0 h)"
    assert action_ids(body) == [] and all("block_id" not in b for b in body["blocks"])
    assert [b for b in body["blocks"] if b["type"] == "actions"] == [{"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Runbook"}, "url": runbook},
        {"type": "button", "text": {"type": "plain_text", "text": "Airflow run"},
         "url": run_url(P0, dr.run_id)}]}]
    rows = stored(db)
    assert [(r[1], r[4]) for r in rows] == [(ts, "trigger"), (resolve["reply"]["ts"], "resolve")]
    assert resolve["reply"]["ts"] != ts
    assert [r["body"]["event_action"] for r in sink.take("/pagerduty")] == ["trigger", "resolve"]
    assert sink.requests == []


def webhook_blocks(db, check_id: str, event: str) -> list[dict]:
    """The webhook's blocks for a stored evaluation and notification (messages.slack_message)."""
    from loyalty_checks.messages import Notice
    from loyalty_checks.store.alerts import load_evaluation

    evaluation = load_evaluation(db, check_id, T)
    [note] = [n for n in evaluation["notifications"] if n["event"] == event]
    cat = catalog()
    check = cat.check(check_id)
    return slack_message(Notice(check=check, event=event, t=T, evaluation=evaluation, dag_id=P0,
                                run_url="x", runbook_url=cat.runbook_link(check_id),
                                entity_cap=cat.entity_cap, decided=note))["blocks"]


def test_p0_error_message_has_no_action_buttons(db, run_dag, sink, slack_web_api, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "postgres", "schema": "nowhere"}))
    dr, states = run_dag(P0, T)
    assert dr.state == "failed"  # the checks could not run
    assert states["expiration_task_stale.report_error"] == "success"
    errors = [p["body"] for p in posts(sink)]
    assert errors and all("CHECK FAILED" in b["text"] for b in errors)
    assert all(b["channel"] == SLACK_ALERTS_CHANNEL and action_ids(b) == [] for b in errors)
    assert all("block_id" not in block for b in errors for block in b["blocks"])
    assert sorted(r[4] for r in stored(db)) == ["error"] * len(errors)  # kept too (the same table)


def test_webhook_connection_posts_as_before_without_buttons(db, run_dag, sink):
    expire_points_success(db, T - 31 * H, "first")
    google_runs(db, 0.1, 0.2)
    dr, _ = run_dag(P0, T)
    assert dr.state == "success"
    assert sink.take("/api/") == []
    [slack] = [r["body"] for r in sink.take("/slack/alerts")]
    assert set(slack) == {"text", "blocks"}
    assert action_ids(slack) == [] and all("block_id" not in b for b in slack["blocks"])
    assert slack["blocks"][:-2] == webhook_blocks(db, "expiration_task_stale", "trigger")[:-2]
    assert stored(db) == []  # a webhook gives no channel and ts


# ---------------------------------------------------------------- Slack says no, or later

def test_slack_api_error_fails_the_notify_task_naming_it(db, run_dag, sink, slack_web_api):
    expire_points_success(db, T - 31 * H, "first")
    google_runs(db, 0.1, 0.2)
    sink.fail(POST, 200, times=3, body={"ok": False, "error": "channel_not_found"})
    dr, states = run_dag(P0, T)
    assert dr.state == "failed"
    assert states["expiration_task_stale.notify_slack"] == "failed"
    assert states["expiration_task_stale.notify_pagerduty"] == "success"  # the pager is not held up
    assert [a["status"] for a in sink.attempts if a["path"] == POST] == [200]  # refused for good: no retry
    error, sent = db.execute("SELECT last_error, sent_at FROM loyalty_monitoring.notifications"
                             " WHERE check_id = 'expiration_task_stale' AND channel = 'slack'").fetchone()
    assert sent is None
    assert error == ("DeliveryError: Slack chat.postMessage to C0ALERTS: Slack API error 'channel_not_found'"
                     " (ok: false)")
    assert stored(db) == []


def test_rate_limited_posts_are_retried_after_retry_after(db, run_dag, sink, slack_web_api):
    expire_points_success(db, T - 31 * H, "first")
    google_runs(db, 0.1, 0.2)
    sink.fail(POST, 429, headers={"Retry-After": "1"}, body={"ok": False, "error": "ratelimited"})
    sink.fail(POST, 200, body={"ok": False, "error": "ratelimited"})  # as Slack may say it too
    dr, states = run_dag(P0, T)
    assert dr.state == "success", states
    assert [a["status"] for a in sink.attempts if a["path"] == POST] == [429, 200, 200]
    [post] = posts(sink)
    assert "loyalty_ack" in action_ids(post["body"])
    assert [r[1] for r in stored(db)] == [post["reply"]["ts"]]


# ---------------------------------------------------------------- Block Kit: 3,000 hostile entities

HOSTILE = ["<!channel> *bold* _it_ ~strike~ <https://evil.example|click> &", "x" * 5000,
           "ctl\x01\x07\x1b[31m\x7f\u202e\u200b end", "`code` <@U123> <!here> :tada: 🍔" * 40]


def assert_valid_block_kit(body: dict) -> None:
    """Every block as slack_sdk's block models read it (nothing dropped, every validator
    passing), and the message-level limits."""
    from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement

    with warnings.catch_warnings():  # the Message model is deprecated (a dict is advised), still a validator
        warnings.simplefilter("ignore", UserWarning)
        from slack_sdk.models.messages.message import Message

    blocks = body["blocks"]
    assert len(blocks) <= 50 and 0 < len(body["text"]) <= 3000
    parsed = [Block.parse(b) for b in blocks]
    assert None not in parsed
    assert [p.to_dict() for p in parsed] == blocks  # validates; a key the model lacks would be dropped
    Message(text=body["text"], blocks=parsed).to_dict()
    for block in parsed:
        assert block.block_id is None or len(block.block_id) <= 255
        if isinstance(block, ActionsBlock):
            assert len(block.elements) <= 25
            assert len({e.action_id for e in block.elements if e.action_id}) == len(
                [e for e in block.elements if e.action_id])  # action ids unique in the block
            for e in block.elements:
                assert isinstance(e, ButtonElement) and len(e.text.text) <= 75
                assert (e.value is None or len(e.value) <= 2000) and (e.url is None or len(e.url) <= 3000)
    assert len(json.dumps(body)) < 40_000


def test_three_thousand_hostile_entities_stay_valid_block_kit(db, run_dag, sink, slack_web_api):
    merchant(db, 1, "Acme <!channel> *M*")
    for i in range(3000):
        store(db, 10_000 + i, 1, f"{HOSTILE[i % len(HOSTILE)]} {i}")
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT 10000 + s, %s, 'POST', '/x' FROM generate_series(0, 2999) s, generate_series(1, 101 + s %% 7)",
               (T - 10 * MIN,))
    dr, states = run_dag(P1, T)
    assert dr.state == "success", states
    [post] = posts(sink)
    body = post["body"]
    assert_valid_block_kit(body)
    assert "loyalty_ack" in action_ids(body)
    dumped = json.dumps(body, ensure_ascii=False)
    assert "<!channel>" not in dumped and "<!here>" not in dumped and "<@U123>" not in dumped
    assert "*Firing stores (3000), worst first*" in dumped

    # Every event the lifecycle can send renders valid Block Kit for this check, buttons or not.
    from loyalty_checks.messages import Notice
    from loyalty_checks.store.alerts import load_evaluation

    evaluation = load_evaluation(db, "rate_limit_spikes", T)
    [note] = evaluation["notifications"]
    cat = catalog()
    firing = note["firing"]
    for event in ("trigger", "update", "reminder", "escalate", "resolve", "error", "error_resolve"):
        decided = {**note, "event": event, "new": firing[:1500], "recovered": firing[1500:],
                   "acknowledged": {"by": "slack:U0ABC", "at": T.isoformat()} if event == "reminder" else None}
        notice = Notice(check=cat.check("rate_limit_spikes"), event=event, t=T,
                        evaluation={**evaluation, "error": HOSTILE[2] * 50}, dag_id=P1, run_url="http://af/r",
                        runbook_url=cat.runbook_link("rate_limit_spikes"), entity_cap=cat.entity_cap,
                        decided=decided)
        for interactive in (True, False):
            assert_valid_block_kit(slack_message(notice, interactive=interactive,
                                                 console_url=f"{CONSOLE}/rate_limit_spikes"))


# ---------------------------------------------------------------- the Slack app

def test_the_app_manifest_asks_what_the_web_api_and_socket_mode_need():
    import yaml

    from tests.conftest import ROOT

    manifest = yaml.safe_load((ROOT / "deploy" / "slack-app-manifest.yaml").read_text())
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == ["chat:write", "usergroups:read"]
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}  # over Socket Mode: no request URL
    assert manifest["features"]["bot_user"]["display_name"]
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "(../deploy/slack-app-manifest.yaml)" in deploy and "connections:write" in deploy
