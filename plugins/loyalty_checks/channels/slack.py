"""Slack through an incoming webhook (`slack_loyalty_alerts`): Block Kit messages."""

from __future__ import annotations

from typing import Any

from loyalty_checks.channels.registry import HTTP_TIMEOUT, Channel, register, send_with_retries
from loyalty_checks.connections import SLACK_ALERTS


@register
class SlackWebhook(Channel):
    """Alerts and errors as Slack messages; at most `attempts` requests of `timeout` seconds
    each (a retry after a timeout may duplicate a message Slack did receive)."""

    name, conn_id, title = "slack", SLACK_ALERTS, "Slack (`slack_loyalty_alerts`)"

    def render(self, notice) -> dict[str, Any]:
        from loyalty_checks.messages import slack_message

        return slack_message(notice)

    def post(self, body: dict[str, Any], timeout: float | None = None) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        timeout = timeout or HTTP_TIMEOUT
        hook = SlackWebhookHook(slack_webhook_conn_id=self.conn_id, timeout=timeout, retry_handlers=[])
        client = hook.client  # slack_sdk WebhookClient: the URL from the connection, no retries of its own
        client.timeout = min(client.timeout or timeout, timeout)

        def attempt():
            response = client.send_dict({"text": body["text"], "blocks": body.get("blocks")})
            return response.status_code, {k.lower(): v[0] if isinstance(v, list) else v
                                          for k, v in (response.headers or {}).items()}, str(response.body)

        send_with_retries(f"Slack webhook {self.conn_id}", attempt, self.attempts)
