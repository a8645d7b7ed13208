"""Send notifications through the providers' hooks, each at most once per decision.

Hooks are imported and built inside the functions: nothing here runs while a DAG
file is parsed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LOYALTY_DB = "loyalty_db"
MONITORING_DB = "loyalty_monitoring_db"
SLACK_ALERTS = "slack_loyalty_alerts"
SLACK_REPORTS = "slack_loyalty_reports"
PAGERDUTY = "pagerduty_loyalty"
HEARTBEAT = "loyalty_heartbeat"  # optional: an HTTP URL pinged after every P0 run
HTTP_TIMEOUT = 15  # seconds per request; retries come on top


@contextmanager
def postgres(conn_id: str) -> Iterator[Any]:
    """A psycopg connection from an Airflow postgres connection, closed afterwards."""
    import psycopg
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    # A blackholed host must fail fast (and be reported), not hang until the run times out.
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    conn.row_factory = psycopg.rows.tuple_row  # whatever `cursor` the connection extra asks for
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def monitoring_db() -> Iterator[Any]:
    """loyalty_monitoring_db, or loyalty_db when no separate connection is defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = MONITORING_DB
    try:
        BaseHook.get_connection(MONITORING_DB)
    except AirflowNotFoundException:
        log.warning("No connection %r: keeping alert state in %r", MONITORING_DB, LOYALTY_DB)
        conn_id = LOYALTY_DB
    from loyalty_checks.state import ensure_schema

    with postgres(conn_id) as conn:
        # Autocommit, so that every `with conn.transaction()` in state.py is a real
        # transaction that commits, never a savepoint inside a forgotten implicit one.
        conn.autocommit = True
        ensure_schema(conn)
        yield conn


def send_slack(conn_id: str, body: dict[str, Any]) -> None:
    """POST a message to a Slack incoming webhook, retrying 429 (Retry-After), 5xx, network errors
    and timeouts (a retry after a timeout may duplicate a message Slack did receive)."""
    from http.client import RemoteDisconnected
    from urllib.error import URLError

    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    hook = SlackWebhookHook(
        slack_webhook_conn_id=conn_id, timeout=HTTP_TIMEOUT,
        retry_handlers=[ConnectionErrorRetryHandler(
                            max_retry_count=2, error_types=[URLError, ConnectionResetError, RemoteDisconnected,
                                                            TimeoutError]),
                        RateLimitErrorRetryHandler(max_retry_count=3),
                        ServerErrorRetryHandler(max_retry_count=2)])
    hook.send(text=body["text"], blocks=body.get("blocks"))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def send_pagerduty(conn_id: str, event: dict[str, Any], timestamp: str) -> str:
    """Send an Events API v2 event to `{events_api_url}/v2/enqueue`; returns its dedup_key.

    The provider's hook always posts to events.pagerduty.com; the connection extra
    `events_api_url` chooses the region (EU) or a local server. The client library
    accepts only https; plain http is allowed for loopback, or with extra `allow_http`.
    """
    import pagerduty
    from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook, prepare_event_data
    from pagerduty.common import successful_response

    hook = PagerdutyEventsHook(pagerduty_events_conn_id=conn_id)
    extra = hook.get_connection(conn_id).extra_dejson
    base_url = (extra.get("events_api_url") or "https://events.pagerduty.com").rstrip("/")
    allow_http = bool(extra.get("allow_http")) or _is_loopback(base_url)

    class Client(pagerduty.EventsApiV2Client):
        @property
        def url(self) -> str:
            return self._url

        @url.setter
        def url(self, value: str) -> None:
            if not (value.startswith("https://") or (allow_http and value.startswith("http://"))):
                raise pagerduty.UrlError(f"events_api_url must use https:// (got {value!r})")
            self._url = value

    client = Client(hook.integration_key, base_url=base_url)
    client.timeout = HTTP_TIMEOUT
    client.retry[429] = 6  # the library would retry 429 forever
    event = prepare_event_data(**event, action_key_name="event_action")
    event["payload"]["timestamp"] = timestamp
    # The client retries 429/5xx with backoff and adds the routing key; a 400 raises.
    response = successful_response(client.post("/v2/enqueue", json=event), context="sending a PagerDuty event")
    try:
        return response.json().get("dedup_key") or event.get("dedup_key", "")
    except ValueError:  # accepted, without the usual JSON body
        return event.get("dedup_key", "")


# ---------------------------------------------------------------- one sender per channel

class PagerDutySender:
    """Alerts and errors as PagerDuty Events v2 (`pagerduty_loyalty`), one incident per dedup_key."""
    channel = "pagerduty"

    def __init__(self, conn_id: str = PAGERDUTY):
        self.conn_id = conn_id

    def send(self, notice) -> None:
        from loyalty_checks.messages import pagerduty_event

        dedup = send_pagerduty(self.conn_id, pagerduty_event(notice), notice.t.isoformat())
        log.info("PagerDuty %s sent, dedup_key %s", notice.event, dedup)


class SlackSender:
    """Alerts and errors as Slack messages (`slack_loyalty_alerts`)."""
    channel = "slack"

    def __init__(self, conn_id: str = SLACK_ALERTS):
        self.conn_id = conn_id

    def send(self, notice) -> None:
        from loyalty_checks.messages import slack_message

        send_slack(self.conn_id, slack_message(notice))
        log.info("Slack %s message sent", notice.event)


SENDERS = {s.channel: s for s in (PagerDutySender, SlackSender)}


def sender(channel: str):
    """The sender of a channel named in the catalog's routes."""
    try:
        return SENDERS[channel]()
    except KeyError:
        raise ValueError(f"unknown channel {channel!r} (known: {', '.join(SENDERS)})") from None
