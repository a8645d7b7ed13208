"""Database connections that never wait for ever on a silent database.

Every connection the package opens (`loyalty_db` for the checks, `loyalty_monitoring_db`
for the alert state) gets time limits from the catalog (`budget.DbTimeouts`, per DAG,
overridable per check):

- **connect**: libpq's `connect_timeout`; a server that accepts the TCP connection and
  never answers fails here.
- **silent peer, kernel level**: TCP keepalives (`keepalives_idle/interval/count`) and
  `tcp_user_timeout`, so that a dead host or a dropped link is noticed by the kernel.
- **silent peer, whatever the network does** (a proxy, a load balancer or a hung server
  that keeps the TCP connection open and sends nothing): a client-side guard. Every wait
  for the server (`psycopg.Connection.wait`: a query, a commit, a fetch) gives up after
  `statement_timeout + grace`; the guard then sends a cancel request (bounded by `grace`)
  and closes the connection, and the task fails with `DatabaseSilent`.
- **the production database stays safe**: the session carries its own limits, so that a
  query or a session the client gave up on ends on the server too: `statement_timeout`
  (set per query by measure.py, per session here), `idle_in_transaction_session_timeout`,
  server-side keepalives and `tcp_user_timeout`, and `client_connection_check_interval`
  (PostgreSQL 14+: a running query notices that its client is gone).

A connection's own extra may tighten the libpq limits (`connect_timeout`,
`keepalives_idle`, `keepalives_interval`, `keepalives_count`, `tcp_user_timeout`), never
loosen them. Hooks and psycopg are imported inside the functions: nothing here runs while a
DAG file is parsed.
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from loyalty_checks.budget import DbTimeouts

log = logging.getLogger(__name__)

LOYALTY_DB = "loyalty_db"
MONITORING_DB = "loyalty_monitoring_db"
SLACK_ALERTS = "slack_loyalty_alerts"
SLACK_REPORTS = "slack_loyalty_reports"
PAGERDUTY = "pagerduty_loyalty"
HEARTBEAT = "loyalty_heartbeat"  # optional: an HTTP URL pinged after every P0 run

# libpq parameters a connection's extra may tighten (0 disables a limit in libpq: never tighter).
TIGHTENABLE = ("connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout")

_schema_ready: set[tuple[str, str]] = set()  # (conn id, host/db) whose loyalty_monitoring schema exists
_schema_lock = threading.Lock()


class DatabaseSilent(Exception):
    """The database sent nothing back within the time limit: the connection was closed."""


def libpq_params(timeouts: DbTimeouts, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The libpq keyword arguments of `timeouts`, tightened (never loosened) by a connection extra."""
    params = timeouts.libpq()
    for key in TIGHTENABLE:
        value = (extra or {}).get(key)
        if value in (None, ""):
            continue
        try:
            value = int(value)
        except (TypeError, ValueError):
            log.warning("Ignoring the connection extra %s=%r: not an integer", key, value)
            continue
        if value > 0 and value < params[key]:
            params[key] = value
        elif value != params[key]:
            log.warning("Ignoring the connection extra %s=%r: looser than the catalog's %s", key, value, params[key])
    if str((extra or {}).get("keepalives", "1")) == "0":
        log.warning("Ignoring the connection extra keepalives=0: keepalives stay on")
    params["keepalives"] = 1
    return params


def _guarded_connection_class():
    import psycopg
    from psycopg import errors

    class GuardedConnection(psycopg.Connection):
        """A psycopg connection whose every wait for the server is bounded (see the module doc)."""

        answer_within: float | None = None   # seconds; None: unbounded (as psycopg)
        cancel_within: float = 5.0

        def wait(self, gen, interval=0.1, timeout=None):
            if timeout is None and self.answer_within:
                timeout = self.answer_within
            try:
                return super().wait(gen, interval=interval, timeout=timeout)
            except errors._WaitTimeout:  # noqa: SLF001 - psycopg's own signal that the wait expired
                if timeout != self.answer_within:
                    raise  # a caller's own timeout (notifies())
                self._give_up(timeout)

        def _give_up(self, waited: float):
            """Cancel what the server may still be running (bounded), close, and fail loudly."""
            where = f"{self.info.host}:{self.info.port}/{self.info.dbname}"
            try:
                self.cancel_safe(timeout=self.cancel_within)
                cancelled = "cancel request sent"
            except Exception as exc:  # noqa: BLE001 - the link may be down for new connections too
                cancelled = f"cancel request failed ({type(exc).__name__})"
            self.pgconn.finish()  # the connection is in an unknown state: never reuse it
            raise DatabaseSilent(
                f"no answer from {where} for {waited:.0f} s (statement timeout + grace): "
                f"connection closed, {cancelled}. The network or the server went silent.") from None

    return GuardedConnection


def _hook_class():
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    class TimedPostgresHook(PostgresHook):
        """PostgresHook whose connections carry the catalog's time limits."""

        def __init__(self, *args, timeouts: DbTimeouts, **kwargs):
            super().__init__(*args, **kwargs)
            self.timeouts = timeouts

        def _create_connection(self, conn_args: dict[str, Any]):
            args = dict(conn_args)
            args.update(libpq_params(self.timeouts, {k: conn_args.get(k) for k in TIGHTENABLE}))
            cls = _guarded_connection_class()
            conn = cls.connect(**args)
            conn.answer_within = self.timeouts.answer_within
            conn.cancel_within = self.timeouts.cancel_within
            from psycopg.types.json import register_default_adapters

            register_default_adapters(conn)  # as the hook does
            return conn

    return TimedPostgresHook


def _session_limits(conn, timeouts: DbTimeouts) -> None:
    """Limits the server applies by itself, should the client vanish (see the module doc)."""
    settings = {
        "statement_timeout": f"{timeouts.statement_ms}ms",
        "idle_in_transaction_session_timeout": f"{timeouts.answer_ms}ms",
        "tcp_keepalives_idle": str(timeouts.keepalives_idle),
        "tcp_keepalives_interval": str(timeouts.keepalives_interval),
        "tcp_keepalives_count": str(timeouts.keepalives_count),
    }
    version = conn.info.server_version
    if version >= 120000:
        settings["tcp_user_timeout"] = f"{timeouts.answer_ms}ms"
    if version >= 140000:
        settings["client_connection_check_interval"] = f"{timeouts.check_client_ms}ms"
    select = ", ".join(f"set_config(%({k})s, %({k}_v)s, false)" for k in settings)
    params = {**{k: k for k in settings}, **{f"{k}_v": v for k, v in settings.items()}}
    conn.execute(f"SELECT {select}", params)  # noqa: S608 - names are ours, values bound
    if not conn.autocommit:
        conn.commit()  # a rolled-back transaction would undo session settings


def timeouts_for(check=None, state: bool = False) -> DbTimeouts:
    """The catalog's limits for `check`'s query, or for its DAG's alert-state connection (`state`)."""
    if check is None:
        return DbTimeouts.default()
    from loyalty_checks.budget import check_timeouts, state_timeouts
    from loyalty_checks.catalog import catalog

    spec = catalog().dags[check.severity]
    return state_timeouts(spec) if state else check_timeouts(spec, check)


@contextmanager
def postgres(conn_id: str, timeouts: DbTimeouts | None = None, *, check=None) -> Iterator[Any]:
    """A psycopg connection from an Airflow postgres connection, with time limits (`timeouts`,
    else those of `check`'s query, else generous defaults); closed afterwards."""
    import psycopg

    timeouts = timeouts or timeouts_for(check)
    conn = _hook_class()(postgres_conn_id=conn_id, timeouts=timeouts).get_conn()
    try:
        conn.row_factory = psycopg.rows.tuple_row  # whatever `cursor` the connection extra asks for
        _session_limits(conn, timeouts)
        yield conn
    finally:
        conn.close()


def defined(conn_id: str) -> bool:
    """Whether the Airflow connection exists (run time only: never while a DAG file is parsed)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def monitoring_conn_id() -> str:
    """loyalty_monitoring_db, or loyalty_db when no separate connection is defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(MONITORING_DB)
    except AirflowNotFoundException:
        log.warning("No connection %r: keeping alert state in %r", MONITORING_DB, LOYALTY_DB)
        return LOYALTY_DB
    return MONITORING_DB


@contextmanager
def monitoring_db(timeouts: DbTimeouts | None = None, *, check=None) -> Iterator[Any]:
    """The alert-state database (autocommit), its schema created on first use in this process.

    Time limits: `timeouts`, else those of the alert state of `check`'s DAG, else defaults."""
    from loyalty_checks.store import ensure_schema

    conn_id = monitoring_conn_id()
    with postgres(conn_id, timeouts or timeouts_for(check, state=True)) as conn:
        # Autocommit, so that every `with conn.transaction()` in store/alerts.py is a real
        # transaction that commits, never a savepoint inside a forgotten implicit one.
        conn.autocommit = True
        key = (conn_id, f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}")
        if key not in _schema_ready:
            with _schema_lock:
                if key not in _schema_ready:
                    ensure_schema(conn)
                    _schema_ready.add(key)
        yield conn


def source_conn_id(check) -> str:
    """The connection a check's SQL reads: loyalty_db, or the alert state for its `source`."""
    return LOYALTY_DB if check.source == LOYALTY_DB else monitoring_conn_id()


@contextmanager
def cli_db(dsn: str | None, conn_id: str | None = None, *, check=None) -> Iterator[Any]:
    """A connection for the command-line tools (quality, backtest, silences): `dsn`, a libpq
    URI, as given (autocommit, the loyalty_monitoring tables ensured); else the Airflow
    connection `conn_id` with the package's time limits (those of `check`'s query when
    given), or the alert state (`monitoring_db`) without one. Closed afterwards."""
    if dsn:
        import psycopg

        from loyalty_checks.store import ensure_schema

        with psycopg.connect(dsn, application_name="loyalty_checks:cli", autocommit=True) as conn:
            ensure_schema(conn)
            yield conn
    elif conn_id is None:
        with monitoring_db() as conn:
            yield conn
    else:
        with postgres(conn_id, check=check) as conn:
            yield conn


def forget_schemas() -> None:
    """Forget which databases have the schema (tests that drop and recreate databases)."""
    _schema_ready.clear()


def ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds))
