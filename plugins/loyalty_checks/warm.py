"""Warm workers: import once, in a long-lived parent, what every task process needs.

Airflow runs each task in a process forked from a long-lived parent (a LocalExecutor
worker, forked from the scheduler; a Celery pool process; the dag-processor's file
processors, forked from its manager), and that process parses the DAG file again
before it runs (Airflow's task runner). What the parent has imported before it forks,
the child has for free (copy on write): Airflow's DAG bag and task runner, the
providers' decorators and the Postgres hook, the plugins (a task process loads them for
their listeners), the API client's TLS context, the task runner's pydantic adapters,
this package, and the parsed catalog.

`install()` registers that import to run the first time the process forks
(`os.register_at_fork`), so it is safe to call from `airflow_local_settings.py`, which
every Airflow process imports while Airflow itself is still initializing
(config/airflow_local_settings.py, docs/deploy.md):

    from loyalty_checks import warm
    warm.install()

A process that never forks (the api-server, `airflow dags test`, a CLI command) never
pays for it. It reads only the catalog file: no database, network, connection or
Variable access, like parsing a DAG file; a failure is logged and changes nothing (the
task process then imports what it needs itself, and reports what is wrong).
"""

from __future__ import annotations

import importlib
import logging
import os
import time

log = logging.getLogger(__name__)

# What the task processes of the check DAGs import.
MODULES = (
    "airflow.dag_processing.dagbag",           # the task runner's BundleDagBag
    "airflow.sdk.execution_time.task_runner",
    "airflow.sdk.execution_time.supervisor",   # the worker's side of each task process
    "airflow.providers.standard.decorators.python",
    "airflow.providers.standard.operators.python",
    "airflow.providers.common.sql.hooks.sql",
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.standard.operators.empty",
    "psycopg",
    "pendulum",
    "loyalty_checks.factory",
    "loyalty_checks.tasks",
    "loyalty_checks.connections",
    "loyalty_checks.measure",
    "loyalty_checks.evaluate",
    "loyalty_checks.lifecycle",
    "loyalty_checks.pipeline",
    "loyalty_checks.store",
    "loyalty_checks.store.alerts",
    "loyalty_checks.channels",
    "loyalty_checks.channels.pagerduty",
    "loyalty_checks.channels.slack",
    "loyalty_checks.messages",
    "airflow.providers.slack.hooks.slack_webhook",        # notify_slack, report_error
    "airflow.providers.slack.hooks.slack",                # the same, through the Web API (type slack)
    "airflow.providers.pagerduty.hooks.pagerduty_events",  # notify_pagerduty, report_error
    "airflow.providers.http.hooks.http",                   # heartbeat
)

_done = False


def _decorators() -> None:
    from airflow.sdk import task

    task.python  # noqa: B018 - resolves the providers' taskflow decorators (ProvidersManager)


def _plugins() -> None:
    from airflow.sdk.listener import get_listener_manager

    get_listener_manager()  # loads the plugins (cached): every task process asks for the listeners


def _api_client_tls() -> None:
    from airflow.sdk.api import client

    client.Client._get_ssl_context_cached(client.API_SSL_CA_FILE_PATH, client.API_SSL_CERT_PATH)


def _type_adapters() -> None:
    """Airflow's task runner builds pydantic TypeAdapters in every task process: two of
    `ToTask` for its comms decoder (airflow/sdk/execution_time/comms.py, CommsDecoder's
    field factories), one of `StartupDetails`, one of `JsonValue` per rendered field
    (task_runner.py); about a sixth of a short task's CPU. The supervisor keeps its own
    as a class attribute. Built once here, the same adapters serve every task process:
    the two modules' `TypeAdapter` name becomes a cache keyed by the type (a TypeAdapter
    of a type without options is a pure function of it). Left alone if Airflow changes."""
    from airflow.sdk.execution_time import comms, task_runner
    from pydantic import JsonValue, TypeAdapter

    modules = [m for m in (comms, task_runner) if getattr(m, "TypeAdapter", None) is TypeAdapter]
    if not modules:
        return
    built: dict = {}

    def cached_type_adapter(tp, *args, **kwargs):
        if args or kwargs:
            return TypeAdapter(tp, *args, **kwargs)
        try:
            return built[tp]
        except KeyError:
            built[tp] = TypeAdapter(tp)
            return built[tp]
        except TypeError:  # an unhashable type: not cached
            return TypeAdapter(tp)

    for tp in (comms.ToTask, comms.StartupDetails, JsonValue):
        cached_type_adapter(tp)
    for module in modules:
        module.TypeAdapter = cached_type_adapter


def _catalog() -> None:
    from loyalty_checks.catalog import catalog

    catalog()


_STEPS = (("decorators", _decorators), ("plugins", _plugins), ("API client", _api_client_tls),
          ("task runner's type adapters", _type_adapters), ("catalog", _catalog))


def preload() -> list[str]:
    """Import MODULES, resolve the taskflow decorators and read the catalog, once per
    process; returns what could not be loaded (logged, never raised)."""
    global _done
    if _done:
        return []
    _done = True
    started, failed = time.monotonic(), []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a cold task process is slower, not broken
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    for name, step in _STEPS:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - e.g. an invalid catalog: the DAG file's import error
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    if failed:
        log.warning("loyalty_checks.warm: not preloaded: %s", "; ".join(failed))
    log.info("loyalty_checks.warm: preloaded in %.2f s (pid %d)", time.monotonic() - started, os.getpid())
    return failed


def install() -> None:
    """Preload before this process first forks (a worker parent), never at import time."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=preload)
