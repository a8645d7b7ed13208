"""The channel registry: `Channel`, `register`, and the HTTP send with retries they share.

The channels that ship with the package are named here by module (BUILTIN), and imported
the first time the registry is asked: the catalog validates routes against it without
importing any sender.
"""

from __future__ import annotations

import importlib
import logging
import time
from http.client import HTTPException
from typing import Any, Callable, ClassVar

from loyalty_checks.budget import HTTP_ATTEMPTS, HTTP_BACKOFF, HTTP_BACKOFF_MAX

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10  # seconds per request when the caller gives none (the catalog's http_timeout otherwise)
RETRY_STATUSES = (429, 500, 502, 503, 504)
# The channels that ship with the package: the modules that register them.
BUILTIN = ("loyalty_checks.channels.pagerduty", "loyalty_checks.channels.slack")


class DeliveryError(RuntimeError):
    """A notification could not be delivered (after its attempts, or refused for good)."""


class Channel:
    """One way to tell people: its connection, its message and its send."""

    name: ClassVar[str]              # what routes in the catalog say
    conn_id: str                     # the Airflow connection it sends with (a class default)
    title: ClassVar[str]             # how the DAG's documentation names it
    pages: ClassVar[bool] = False    # the pager: escalation goes to it, reminders never do
    attempts: ClassVar[int] = HTTP_ATTEMPTS  # requests per send at worst (budget.py)

    def __init__(self, conn_id: str | None = None):
        self.conn_id = conn_id or type(self).conn_id

    def render(self, notice) -> dict[str, Any]:
        """The body of one notice on this channel (pure)."""
        raise NotImplementedError

    def post(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any] | None:
        """Send a rendered body; raise DeliveryError when it could not be delivered. Return a
        receipt saying where the message is (Slack's Web API: its channel and ts), or None."""
        raise NotImplementedError

    def send(self, notice) -> dict[str, Any] | None:
        """Render and post one notice; the post's receipt with the body sent, or None."""
        body = self.render(notice)
        receipt = self.post(body, notice.http_timeout)
        log.info("%s %s of %s sent", self.name, notice.event, notice.check.id)
        return {**receipt, "body": body} if receipt else None


REGISTRY: dict[str, type[Channel]] = {}


def register(cls: type[Channel]) -> type[Channel]:
    """Make a channel routable by its name."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"channel {cls.name!r} is registered twice ({REGISTRY[cls.name].__module__}, {cls.__module__})")
    REGISTRY[cls.name] = cls
    return cls


def _builtins() -> dict[str, type[Channel]]:
    for module in BUILTIN:
        importlib.import_module(module)  # registers its class (once: modules are cached)
    return REGISTRY


def names() -> tuple[str, ...]:
    """Every registered channel, in the order notifications go out: pagers first."""
    _builtins()
    ordered = sorted(enumerate(REGISTRY.values()), key=lambda p: (not p[1].pages, p[0]))
    return tuple(cls.name for _, cls in ordered)


def pager() -> str:
    """The channel escalations go to."""
    return next(cls.name for cls in _builtins().values() if cls.pages)


def get(name: str, conn_id: str | None = None) -> Channel:
    """The channel named in a route (with its own connection, or `conn_id`)."""
    try:
        return _builtins()[name](conn_id)
    except KeyError:
        raise ValueError(f"unknown channel {name!r} (registered: {', '.join(names())})") from None


def send_with_retries(what: str, attempt: Callable[[], tuple[int, dict[str, str], str]],
                      attempts: int = HTTP_ATTEMPTS) -> tuple[int, str]:
    """Call `attempt` (one HTTP request) up to `attempts` times.

    Retried: network errors and timeouts (a server that accepts and never answers is cut
    off by the request's timeout), 429 (after its Retry-After, capped) and 5xx. Anything
    else non-2xx raises at once. The worst case is what budget.send_seconds assumes.
    """
    last, delay = "", HTTP_BACKOFF[0]
    for n in range(attempts):
        if n:
            time.sleep(delay)
        delay = HTTP_BACKOFF[min(n, len(HTTP_BACKOFF) - 1)]
        try:
            status, headers, body = attempt()
        except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, RemoteDisconnected
            last = f"{type(exc).__name__}: {exc}"
            log.warning("%s: attempt %d of %d failed: %s", what, n + 1, attempts, last)
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
        log.warning("%s: attempt %d of %d got %s", what, n + 1, attempts, last)
    raise DeliveryError(f"{what}: no success after {attempts} attempts; last: {last}")

