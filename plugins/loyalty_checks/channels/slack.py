"""Slack (`slack_loyalty_alerts`): Block Kit messages through the Web API or a webhook.

The connection's type picks the transport:
- `slack` (Web API): password = the bot token, extra `channel` (id or name), optional extra
  `base_url` (default https://slack.com/api/). Alerts go out with `chat.postMessage` and
  carry the action buttons (shared/spec/slack-actions.md); `post` returns the message's
  channel and ts, which the pipeline keeps for `chat.update`.
- `slackwebhook` (or any other type: as before): an incoming webhook, no buttons, no receipt.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from loyalty_checks.channels.registry import HTTP_TIMEOUT, Channel, DeliveryError, register, send_with_retries
from loyalty_checks.connections import SLACK_ALERTS

log = logging.getLogger(__name__)

WEB_API = "slack"  # the connection type of the Web API (the provider's SlackHook)
# Slack API errors worth another attempt (https://docs.slack.dev/reference/methods/chat.postMessage)
RETRY_ERRORS = {"ratelimited": 429, "internal_error": 503, "fatal_error": 503, "service_unavailable": 503,
                "request_timeout": 503}


def console_url(check_id: str) -> str:
    """The check's page in the console (`[api] base_url` + /loyalty/checks/<id>)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback=None) or "http://localhost:8080"
    return f"{base.rstrip('/')}/loyalty/checks/{quote(check_id, safe='')}"


@register
class Slack(Channel):
    """Alerts and errors as Slack messages; at most `attempts` requests of `timeout` seconds
    each (a retry after a timeout may duplicate a message Slack did receive)."""

    name, conn_id, title = "slack", SLACK_ALERTS, "Slack (`slack_loyalty_alerts`)"

    def __init__(self, conn_id: str | None = None):
        super().__init__(conn_id)
        self._conn = None

    @property
    def connection(self):
        if self._conn is None:
            from airflow.sdk import BaseHook

            self._conn = BaseHook.get_connection(self.conn_id)
        return self._conn

    @property
    def web_api(self) -> bool:
        """Posted through the Web API (connection type `slack`), else an incoming webhook."""
        return self.connection.conn_type == WEB_API

    def render(self, notice) -> dict[str, Any]:
        """The message (messages.py): with the action buttons and the console link when the
        connection is the Web API's (the one lookup besides the message itself)."""
        from loyalty_checks.messages import slack_message

        if self.web_api:  # the alert events carry the action buttons
            return slack_message(notice, interactive=True, console_url=console_url(notice.check.id))
        return slack_message(notice)

    def post(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any] | None:
        if self.web_api:
            return self.call("chat.postMessage", {"text": body["text"], "blocks": body.get("blocks")}, timeout)
        self._post_webhook(body, timeout or HTTP_TIMEOUT)
        return None

    def call(self, method: str, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any] | None:
        """One Web API call (`chat.postMessage`, `chat.update`) to the connection's channel
        (unless `payload` names one), under the channel's retries; the message's
        {"channel", "ts"}. Slack's `ok: false` is a DeliveryError naming its `error`."""
        from airflow.providers.slack.hooks.slack import SlackHook
        from slack_sdk.errors import SlackApiError

        timeout = timeout or HTTP_TIMEOUT
        extra = self.connection.extra_dejson
        payload = {k: v for k, v in {"channel": extra.get("channel"), **payload}.items() if v is not None}
        if not payload.get("channel"):
            raise DeliveryError(f"Slack connection {self.conn_id!r} has no extra `channel` to post to")
        hook = SlackHook(slack_conn_id=self.conn_id, retry_handlers=[])  # retries: send_with_retries only
        client = hook.client  # slack_sdk WebClient: token and base_url from the connection
        client.timeout = min(client.timeout or timeout, timeout)
        if not client.base_url.endswith("/"):  # the method is joined to it
            client.base_url += "/"
        what = f"Slack {method} to {payload['channel']}"

        def attempt():
            try:
                return 200, {}, client.api_call(method, json=payload).data
            except SlackApiError as exc:  # a non-200 answer, or ok: false
                answer = exc.response
                error = answer.data.get("error") if isinstance(answer.data, dict) else None
                if answer.status_code == 200 and error not in RETRY_ERRORS:
                    raise DeliveryError(f"{what}: Slack API error {error!r} (ok: false)") from None
                headers = {k.lower(): v[0] if isinstance(v, list) else v for k, v in (answer.headers or {}).items()}
                status = RETRY_ERRORS[error] if answer.status_code == 200 else answer.status_code
                return status, headers, f"error {error!r}" if error else str(answer.data)

        _, response = send_with_retries(what, attempt, self.attempts)
        ts = response.get("ts") if isinstance(response, dict) else None
        return {"channel": response.get("channel") or payload["channel"], "ts": ts} if ts else None

    def _post_webhook(self, body: dict[str, Any], timeout: float) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        hook = SlackWebhookHook(slack_webhook_conn_id=self.conn_id, timeout=timeout, retry_handlers=[])
        client = hook.client  # slack_sdk WebhookClient: the URL from the connection, no retries of its own
        client.timeout = min(client.timeout or timeout, timeout)

        def attempt():
            response = client.send_dict({"text": body["text"], "blocks": body.get("blocks")})
            return response.status_code, {k.lower(): v[0] if isinstance(v, list) else v
                                          for k, v in (response.headers or {}).items()}, str(response.body)

        send_with_retries(f"Slack webhook {self.conn_id}", attempt, self.attempts)
