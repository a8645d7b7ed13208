"""The one store: every read and write of `loyalty_monitoring` (in loyalty_monitoring_db).

Loads, stores and claims; decides nothing (lifecycle.py decides). One module per reader:

- alerts.py   the DAGs' alert state: check_state, evaluations, notifications (at most once)
- console.py  what the console reads (alerts, a check's history, silences)

Every function takes an open psycopg connection (connections.py opens them).
"""

from __future__ import annotations

from loyalty_checks.catalog import INCLUDE_DIR

MONITORING_DDL = INCLUDE_DIR / "sql" / "schema" / "monitoring.sql"
_LOCK_KEY = 0x4C4F59414C5459  # advisory lock id for concurrent first-use DDL


def ensure_schema(conn) -> None:
    """Create the loyalty_monitoring tables if missing (safe to call concurrently)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(MONITORING_DDL.read_text(encoding="utf-8"))
