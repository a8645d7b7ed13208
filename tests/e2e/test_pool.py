"""Under a real scheduler, the Airflow pool `loyalty_db` caps the concurrent check queries
on the loyalty database: with one slot, the two P0 checks query one after the other even
while the first one is stuck waiting on a lock."""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import psycopg
import pytest

from tests.e2e.conftest import DAG_ID, SCENARIO_TIMEOUT

pytestmark = pytest.mark.e2e


def test_pool_caps_concurrent_queries_on_loyalty_db(airflow_stack, pg, loyalty_db):
    deadline = time.monotonic() + SCENARIO_TIMEOUT
    stack = airflow_stack("LocalExecutor", deadline=deadline)
    stack.cli("pools", "set", "loyalty_db", "1", "one check query at a time")

    blocker = psycopg.connect(pg.conninfo(loyalty_db))
    blocker.execute("LOCK TABLE celery_taskmeta, loyalty_wallet_sync_runs IN ACCESS EXCLUSIVE MODE")
    most, stop = [0], threading.Event()

    def sample():
        with psycopg.connect(pg.conninfo(loyalty_db), autocommit=True) as conn:
            while not stop.is_set():
                running = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                                       " AND application_name LIKE 'loyalty_checks:%'").fetchone()[0]
                most[0] = max(most[0], running)
                time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        status, body = stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        assert status == 200, body
        stack.wait_for("a check query waiting on the lock", lambda: most[0] >= 1, deadline)
        time.sleep(5)  # long enough for a second query to start, were the pool not there
        blocker.rollback()
        released = time.time()

        def finished():
            runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns?limit=5")["dag_runs"]
            return next((r for r in runs if r["state"] in ("success", "failed")), None)

        run = stack.wait_for("the run to finish", finished, deadline)
    finally:
        stop.set()
        sampler.join()
        blocker.close()
    tis = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'], safe='')}/taskInstances")
    measures = sorted((ti for ti in tis["task_instances"] if ti["task_id"].endswith(".measure")),
                      key=lambda ti: ti["start_date"])
    assert most[0] == 1, stack.report(f"{most[0]} check queries ran at once with a pool of 1")
    assert [ti["state"] for ti in measures] == ["success", "success"], stack.report(str(measures))
    from datetime import datetime

    second_start = datetime.fromisoformat(measures[1]["start_date"].replace("Z", "+00:00")).timestamp()
    assert second_start >= released - 1, stack.report("the second check did not wait for a pool slot")
