"""PagerDuty Events API v2 (`pagerduty_loyalty`): one incident per check, the pager."""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit

from loyalty_checks.channels.registry import HTTP_TIMEOUT, Channel, DeliveryError, register, send_with_retries
from loyalty_checks.connections import PAGERDUTY

log = logging.getLogger(__name__)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register
class PagerDuty(Channel):
    """Alerts and errors as Events v2 events to `{events_api_url}/v2/enqueue`.

    The provider's hook always posts to events.pagerduty.com; the connection extra
    `events_api_url` chooses the region (EU) or a local server. Only https is accepted;
    plain http is allowed for loopback, or with extra `allow_http`. At most `attempts`
    requests of `timeout` seconds each, with the same `dedup_key` (PagerDuty de-duplicates
    them).
    """

    name, conn_id, pages = "pagerduty", PAGERDUTY, True
    title = "PagerDuty (`pagerduty_loyalty`, one incident per check)"

    def render(self, notice) -> dict[str, Any]:
        from loyalty_checks.messages import pagerduty_event

        return {**pagerduty_event(notice), "timestamp": notice.t.isoformat()}

    def post(self, body: dict[str, Any], timeout: float | None = None) -> None:
        from urllib.request import HTTPRedirectHandler, Request, build_opener

        from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook, prepare_event_data

        body = dict(body)
        timestamp = body.pop("timestamp", None)
        hook = PagerdutyEventsHook(pagerduty_events_conn_id=self.conn_id)
        extra = hook.get_connection(self.conn_id).extra_dejson
        base_url = (extra.get("events_api_url") or "https://events.pagerduty.com").rstrip("/")
        allow_http = bool(extra.get("allow_http")) or _is_loopback(base_url)
        if not (base_url.startswith("https://") or (allow_http and base_url.startswith("http://"))):
            raise DeliveryError(f"events_api_url must use https:// (got {base_url!r})")
        event = prepare_event_data(**body, action_key_name="event_action")
        if timestamp:
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

        _, answer = send_with_retries(f"PagerDuty {event.get('event_action')} {event.get('dedup_key')}", attempt,
                                      self.attempts)
        try:
            dedup = json.loads(answer).get("dedup_key") or event.get("dedup_key", "")
        except (ValueError, AttributeError):  # accepted, without the usual JSON body
            dedup = event.get("dedup_key", "")
        log.info("PagerDuty %s sent, dedup_key %s", event.get("event_action"), dedup)
