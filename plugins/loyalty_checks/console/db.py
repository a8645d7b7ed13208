"""The console's database connection: the alert state in `loyalty_monitoring_db`.

The connection comes from the Airflow connection `loyalty_monitoring_db`, or
`loyalty_db` when that one is not defined (as for the workers). Reads run in a
read-only transaction (store.read_only) with a statement timeout and an application_name
a DBA can see.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Any, Iterator

STATEMENT_TIMEOUT_MS = 5000
APPLICATION_NAME = "loyalty_checks:console"
WORK_MEM = "32MB"  # ranking 10,000 alerts sorts in memory


@contextmanager
def connection() -> Iterator[Any]:
    """An autocommit psycopg connection to the alert state, its tables created on first use
    (connections.monitoring_db, as the DAGs' tasks open it)."""
    from loyalty_checks.connections import monitoring_db

    with monitoring_db() as conn:
        yield conn


@contextmanager
def reading(conn) -> Iterator[Any]:
    """A read-only transaction on `conn` (rolled back: the console never writes while reading):
    the store's read_only with the console's timeout, name and work_mem."""
    from loyalty_checks.store import read_only

    with read_only(conn, dt.timedelta(milliseconds=STATEMENT_TIMEOUT_MS), APPLICATION_NAME, WORK_MEM):
        yield conn
