"""The channels notifications go out on: one notifier class each, registered by name.

A channel is a subclass of `Channel` that names its Airflow connection, how it renders a
notice (messages.py) and how it sends it, and its time budget (requests per send, which
budget.py counts). The catalog's routes name registered channels (`digest` is not a
channel: the P2 DAG's weekly report). Adding one is a new module with its class,
decorated with `@register`, and its module in registry.BUILTIN:

    @register
    class Teams(Channel):
        name, conn_id, title = "teams", "teams_loyalty_alerts", "Microsoft Teams (`teams_loyalty_alerts`)"
        def render(self, notice): ...
        def post(self, body): ...

Hooks are imported inside the send functions: nothing here runs while a DAG file is parsed.
"""

from __future__ import annotations

from loyalty_checks.channels.registry import (  # noqa: F401 - the registry's interface
    HTTP_TIMEOUT,
    REGISTRY,
    Channel,
    DeliveryError,
    get,
    names,
    pager,
    register,
    send_with_retries,
)
