"""The one store: every read and write of `loyalty_monitoring` (in loyalty_monitoring_db).

Loads, stores and claims; decides nothing (lifecycle.py decides). One module per reader:

- alerts.py     the DAGs' alert state: check_state, evaluations, notifications (at most once)
- console.py    what the console reads (alerts, a check's history, silences)
- backtests.py  the stored backtests (written by the loyalty_backtest DAG and the console)

Every function takes an open psycopg connection (connections.py opens them); reads that
must not write run inside `read_only` (a rolled-back read-only transaction).
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Any, Iterator

from loyalty_checks.catalog import INCLUDE_DIR

MONITORING_DDL = INCLUDE_DIR / "sql" / "schema" / "monitoring.sql"
_LOCK_KEY = 0x4C4F59414C5459  # advisory lock id for concurrent first-use DDL


def ensure_schema(conn) -> None:
    """Create the loyalty_monitoring tables if missing (safe to call concurrently)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(MONITORING_DDL.read_text(encoding="utf-8"))


@contextmanager
def read_only(conn, statement_timeout: dt.timedelta, application_name: str,
              work_mem: str | None = None) -> Iterator[Any]:
    """A read-only transaction on `conn`, always rolled back, with a statement timeout, in
    UTC, without JIT compilation and named for the DBA (`application_name`, at most 63 characters); `work_mem`
    (e.g. "32MB") for the sorts of this transaction only. Yields `conn`.

    An implicit transaction left open on a connection without autocommit is ended first:
    SET TRANSACTION READ ONLY must be the transaction's first statement."""
    if not conn.autocommit and conn.info.transaction_status != 0:  # not IDLE
        conn.rollback()
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %(timeout)s, true),"
                     " set_config('application_name', %(app)s, true),"
                     " set_config('TimeZone', 'UTC', true),"
                     " set_config('jit', 'off', true)"  # compiling costs 0.2 s; these queries read index ranges
                     + (", set_config('work_mem', %(work_mem)s, true)" if work_mem else ""),
                     {"timeout": f"{int(statement_timeout.total_seconds() * 1000)}ms",
                      "app": application_name[:63], "work_mem": work_mem})
        yield conn


def rows(conn, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one statement as dicts by column name."""
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
