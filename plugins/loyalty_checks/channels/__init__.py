"""Send notifications through the providers' hooks, each at most once per decision.

Hooks are imported and built inside the functions: nothing here runs while a DAG
file is parsed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from http.client import HTTPException
from typing import Any, Callable
from urllib.error import HTTPError
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Connection ids and database connections live in connections.py; re-exported for callers.
from loyalty_checks.connections import (  # noqa: E402,F401
    HEARTBEAT,
    LOYALTY_DB,
    MONITORING_DB,
    PAGERDUTY,
    SLACK_ALERTS,
    SLACK_REPORTS,
    monitoring_db,
    postgres,
)

HTTP_TIMEOUT = 10  # seconds per request when the caller gives none (the catalog's http_timeout otherwise)
RETRY_STATUSES = (429, 500, 502, 503, 504)


class DeliveryError(RuntimeError):
    """A notification could not be delivered (after its attempts, or refused for good)."""


def _send_with_retries(what: str, attempt: Callable[[], tuple[int, dict[str, str], str]]) -> tuple[int, str]:
    """Call `attempt` (one HTTP request) up to budget.HTTP_ATTEMPTS times.

    Retried: network errors and timeouts (a server that accepts and never answers is cut
    off by the request's timeout), 429 (after its Retry-After, capped) and 5xx. Anything
    else non-2xx raises at once. The worst case is what budget.send_seconds assumes.
    """
    from loyalty_checks.budget import HTTP_ATTEMPTS, HTTP_BACKOFF, HTTP_BACKOFF_MAX

    last, delay = "", HTTP_BACKOFF[0]
    for n in range(HTTP_ATTEMPTS):
        if n:
            time.sleep(delay)
        delay = HTTP_BACKOFF[min(n, len(HTTP_BACKOFF) - 1)]
        try:
            status, headers, body = attempt()
        except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, RemoteDisconnected
            last = f"{type(exc).__name__}: {exc}"
            log.warning("%s: attempt %d of %d failed: %s", what, n + 1, HTTP_ATTEMPTS, last)
            continue
        if 200 <= status < 300:
            return status, body
        last = f"HTTP {status}: {body[:300]}"
        if status not in RETRY_STATUSES:
            raise DeliveryError(f"{what}: {last}")
        if status == 429:
            try:
                delay = min(float(headers.get("retry-after") or delay), HTTP_BACKOFF_MAX)
            except ValueError:
                pass
        log.warning("%s: attempt %d of %d got %s", what, n + 1, HTTP_ATTEMPTS, last)
    raise DeliveryError(f"{what}: no success after {HTTP_ATTEMPTS} attempts; last: {last}")


def send_slack(conn_id: str, body: dict[str, Any], timeout: float | None = None) -> None:
    """POST a message to a Slack incoming webhook: at most budget.HTTP_ATTEMPTS requests of
    `timeout` seconds each (a retry after a timeout may duplicate a message Slack did receive)."""
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=timeout or HTTP_TIMEOUT, retry_handlers=[])
    client = hook.client  # slack_sdk WebhookClient: the URL from the connection, no retries of its own
    client.timeout = min(client.timeout or (timeout or HTTP_TIMEOUT), timeout or HTTP_TIMEOUT)

    def attempt():
        response = client.send_dict({"text": body["text"], "blocks": body.get("blocks")})
        return response.status_code, {k.lower(): v[0] if isinstance(v, list) else v
                                      for k, v in (response.headers or {}).items()}, str(response.body)

    _send_with_retries(f"Slack webhook {conn_id}", attempt)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def send_pagerduty(conn_id: str, event: dict[str, Any], timestamp: str, timeout: float | None = None) -> str:
    """Send an Events API v2 event to `{events_api_url}/v2/enqueue`; returns its dedup_key.

    The provider's hook always posts to events.pagerduty.com; the connection extra
    `events_api_url` chooses the region (EU) or a local server. Only https is accepted;
    plain http is allowed for loopback, or with extra `allow_http`. At most
    budget.HTTP_ATTEMPTS requests of `timeout` seconds each, with the same `dedup_key`
    (PagerDuty de-duplicates them).
    """
    from urllib.request import HTTPRedirectHandler, Request, build_opener

    from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook, prepare_event_data

    hook = PagerdutyEventsHook(pagerduty_events_conn_id=conn_id)
    extra = hook.get_connection(conn_id).extra_dejson
    base_url = (extra.get("events_api_url") or "https://events.pagerduty.com").rstrip("/")
    allow_http = bool(extra.get("allow_http")) or _is_loopback(base_url)
    if not (base_url.startswith("https://") or (allow_http and base_url.startswith("http://"))):
        raise DeliveryError(f"events_api_url must use https:// (got {base_url!r})")
    event = prepare_event_data(**event, action_key_name="event_action")
    event["payload"]["timestamp"] = timestamp
    event["routing_key"] = hook.integration_key
    data = json.dumps(event).encode()

    class NoRedirect(HTTPRedirectHandler):  # PagerDuty never redirects: fail loudly instead
        def redirect_request(self, *args, **kwargs):
            return None

    opener = build_opener(NoRedirect)

    def attempt():
        request = Request(f"{base_url}/v2/enqueue", data=data, method="POST",  # noqa: S310 - scheme checked above
                          headers={"Content-Type": "application/json", "Accept": "application/json",
                                   "User-Agent": "loyalty-checks"})
        try:
            with opener.open(request, timeout=timeout or HTTP_TIMEOUT) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                    response.read().decode("utf-8", "replace")
        except HTTPError as exc:  # a non-2xx answer: its status decides
            with exc:
                return exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, \
                    exc.read().decode("utf-8", "replace")

    _, body = _send_with_retries(f"PagerDuty {event.get('event_action')} {event.get('dedup_key')}", attempt)
    try:
        return json.loads(body).get("dedup_key") or event.get("dedup_key", "")
    except (ValueError, AttributeError):  # accepted, without the usual JSON body
        return event.get("dedup_key", "")


# ---------------------------------------------------------------- one sender per channel

def http_timeout(notice) -> float:
    """Seconds per request: the catalog's http_timeout of the check's DAG (budget.py)."""
    from loyalty_checks.catalog import catalog

    return catalog().dags[notice.check.severity].http_timeout.total_seconds()


class PagerDutySender:
    """Alerts and errors as PagerDuty Events v2 (`pagerduty_loyalty`), one incident per dedup_key."""
    channel = "pagerduty"

    def __init__(self, conn_id: str = PAGERDUTY):
        self.conn_id = conn_id

    def send(self, notice) -> None:
        from loyalty_checks.messages import pagerduty_event

        dedup = send_pagerduty(self.conn_id, pagerduty_event(notice), notice.t.isoformat(), http_timeout(notice))
        log.info("PagerDuty %s sent, dedup_key %s", notice.event, dedup)


class SlackSender:
    """Alerts and errors as Slack messages (`slack_loyalty_alerts`)."""
    channel = "slack"

    def __init__(self, conn_id: str = SLACK_ALERTS):
        self.conn_id = conn_id

    def send(self, notice) -> None:
        from loyalty_checks.messages import slack_message

        send_slack(self.conn_id, slack_message(notice), http_timeout(notice))
        log.info("Slack %s message sent", notice.event)


SENDERS = {s.channel: s for s in (PagerDutySender, SlackSender)}


def sender(channel: str):
    """The sender of a channel named in the catalog's routes."""
    try:
        return SENDERS[channel]()
    except KeyError:
        raise ValueError(f"unknown channel {channel!r} (known: {', '.join(SENDERS)})") from None
