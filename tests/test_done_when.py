"""Issue 9's "done when", as an outside harness runs it: the real catalog's P0 numbers,
`airflow dags test loyalty_p0_checks <T>` in its own process (retries and retry delays in
real time), and a black-holing TCP proxy in front of `loyalty_db`.

The link goes silent in the middle of the first check's query (TCP open, nothing comes
back); from then on every new connection is accepted and never answered (the second
check, and both retries, are silent at connect). Both error pages
(`loyalty/<check>/error`) must arrive within 120 s, and no alert `loyalty/<check>`.
About 60 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg

from loyalty_checks import budget
from loyalty_checks.catalog import DEFAULT_CATALOG, load_catalog
from tests.proxy import TcpProxy, pg_conn_via, pg_upstream
from tests.sql.rows import H, T
from tests.test_dag_runs import P0, expire_points_success, google_runs
from tests.test_time_budgets import ERROR_PAGES, partition_when_active, record_timing

WITHIN = 120  # seconds, from the issue


def test_black_holed_loyalty_db_pages_both_errors_within_120_s(db, pg, loyalty_db, airflow_db, airflow_conns, sink,
                                                               monkeypatch, tmp_path):
    expire_points_success(db, T - H, "fresh")  # healthy: a false alert would be a bug
    google_runs(db, 0.1, 0.1)
    cat = load_catalog(DEFAULT_CATALOG)  # the real numbers, whatever LOYALTY_CHECKS_CATALOG says
    monkeypatch.delenv("LOYALTY_CHECKS_CATALOG", raising=False)
    seen: list[tuple[float, dict]] = []
    sink.on_record = lambda r: seen.append((time.time(), r)) if r["path"].startswith("/pagerduty") else None
    stop = threading.Event()
    with TcpProxy(pg_upstream(pg)) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_LOYALTY_DB", pg_conn_via(proxy, pg, loyalty_db))
        with psycopg.connect(pg.conninfo(loyalty_db)) as blocker:  # the first query is in flight when cut
            blocker.execute("LOCK TABLE celery_taskmeta, loyalty_wallet_sync_runs IN ACCESS EXCLUSIVE MODE")
            partition_when_active(pg, loyalty_db, proxy, "loyalty_checks:%", stop)
            started = time.time()
            env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
            out = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", P0, T.isoformat()], env=env,
                                 capture_output=True, text=True, timeout=400)
            finished = time.time()
            blocker.rollback()
        stop.set()
        silent_at = proxy.went_silent_at
    log = (out.stdout + out.stderr)[-4000:]
    assert silent_at is not None, f"the check queries never reached the proxy:\n{log}"
    pages = [(at, r["body"]) for at, r in seen]
    keys = [p["dedup_key"] for _, p in pages]
    assert set(keys) == ERROR_PAGES and all(p["event_action"] == "trigger" for _, p in pages), (keys, log)
    arrived = {p["dedup_key"]: at - started for at, p in pages}
    assert max(arrived.values()) < WITHIN, (arrived, log)
    errors = [p["payload"]["custom_details"]["error"] for _, p in pages]
    assert all("DatabaseSilent" in e or "timeout" in e for e in errors), errors  # the last try's error
    # The whole run ended inside the P0 DAG's run timeout, even under `dags test`.
    assert finished - started < cat.dags["P0"].run_timeout.total_seconds(), finished - started
    for key, seconds in sorted(arrived.items()):
        record_timing(f"done when: {key} (real P0 catalog, airflow dags test)", seconds - (silent_at - started))
    b = budget.dag_budget(cat.dags["P0"], cat.for_severity("P0"))
    print(f"\n[done when] error pages after {', '.join(f'{k}: {v:.1f} s' for k, v in sorted(arrived.items()))};"
          f" dags test took {finished - started:.1f} s; P0 worst path {budget.fmt(b.worst()[2])}")
