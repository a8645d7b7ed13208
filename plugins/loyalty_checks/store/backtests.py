"""The stored backtests (`loyalty_monitoring.backtests`): what the `loyalty_backtest` DAG
stores (whoever triggered it: the Airflow UI, the REST API or the console's backtest
form), and what the console lists and shows.

One row per backtest: the request (spec/backtest.md's parameters and the DAG run's
`run_id`), the result JSON (without the per-T series) and the PNG plot.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from loyalty_checks.store import rows


def insert(conn, check_id: str, requested_by: str, request: dict[str, Any], result: dict[str, Any],
           plot: bytes) -> int:
    """Store one backtest; returns its id."""
    row = conn.execute(
        "INSERT INTO loyalty_monitoring.backtests (check_id, requested_by, request, result, plot)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (check_id, requested_by, json.dumps(request), json.dumps(result), plot)).fetchone()
    return row[0]


def recent(conn, check_ids: Sequence[str], limit: int = 20) -> list[dict[str, Any]]:
    """The latest stored backtests of `check_ids` (the DAG's and the console's), newest first."""
    return rows(conn, """
        SELECT id, check_id, created_at, requested_by, request, result->'summary' AS summary,
               result->'evaluations' AS evaluations
        FROM loyalty_monitoring.backtests
        WHERE check_id = ANY(%(checks)s)
        ORDER BY created_at DESC, id DESC LIMIT %(limit)s
        """, {"checks": list(check_ids), "limit": limit})


def get(conn, backtest_id: int) -> dict[str, Any] | None:
    """One stored backtest with its result and plot, or None."""
    found = rows(conn, "SELECT id, check_id, created_at, requested_by, request, result, plot"
                       " FROM loyalty_monitoring.backtests WHERE id = %(id)s", {"id": backtest_id})
    return found[0] if found else None


def of_run(conn, run_id: str) -> dict[str, Any] | None:
    """The backtest a `loyalty_backtest` DAG run stored (its request's `run_id`), or None yet."""
    found = rows(conn, "SELECT id, check_id, created_at, requested_by, request, result, plot"
                       " FROM loyalty_monitoring.backtests WHERE request->>'run_id' = %(run_id)s"
                       " ORDER BY id DESC LIMIT 1", {"run_id": run_id})
    return found[0] if found else None
