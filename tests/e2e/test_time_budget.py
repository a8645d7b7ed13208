"""End to end under a real scheduler: a scheduled P0 run whose `loyalty_db` goes silent
(a TCP proxy that black-holes the link in the middle of the first query, then every new
connection) reports both checks' errors inside its own run timeout, ends red with
`report_error` and `heartbeat_failed` run (not skipped by a dagrun timeout), and the next
scheduled run starts on time.

A copy of the catalog schedules P0 every 2 minutes with short limits (statement 2 s,
connect 2 s, grace 1 s, HTTP 1 s, no measure retry; run timeout 115 s, which the budget
check accepts): the production numbers would make the test wait 5 minutes for the next
run. About 3 minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest
import yaml

from loyalty_checks import budget
from loyalty_checks.catalog import DEFAULT_CATALOG, load_catalog
from tests.e2e.conftest import DAG_ID
from tests.proxy import TcpProxy, pg_conn_via, pg_upstream
from tests.sql.rows import H
from tests.test_dag_runs import expire_points_success, google_runs
from tests.test_time_budgets import ERROR_PAGES, partition_when_active, record_timing

pytestmark = pytest.mark.e2e

EVERY = dt.timedelta(minutes=2)
E2E_P0 = {"schedule": "*/2 * * * *", "run_timeout": "115s", "statement_timeout": "2s", "connect_timeout": "2s",
          "grace": "1s", "http_timeout": "1s", "retries": 0, "retry_delay": "2s"}
ON_TIME = 45  # seconds between a run's scheduled moment and its start, at most (scheduler latency on a busy machine)


def parse_ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def test_scheduled_p0_run_with_a_silent_loyalty_db_reports_in_time_and_the_next_run_is_on_time(
        airflow_stack, pg, loyalty_db, db, sink, tmp_path, capsys):
    deadline = time.monotonic() + 420
    now = dt.datetime.now(dt.timezone.utc)
    expire_points_success(db, now - H, "fresh")  # healthy: only errors may page
    google_runs(db, 0.1, 0.1, end=now - dt.timedelta(minutes=1))
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["dags"]["P0"].update(E2E_P0)
    catalog_file = tmp_path / "checks.yaml"
    catalog_file.write_text(yaml.safe_dump(data, sort_keys=False))
    cat = load_catalog(catalog_file)  # the budget check accepts it
    spec = cat.dags["P0"]

    arrivals: list[tuple[float, dict]] = []
    sink.on_record = lambda r: arrivals.append((time.time(), r))
    stop = threading.Event()
    proxy = TcpProxy(pg_upstream(pg)).start()
    blocker = psycopg.connect(pg.conninfo(loyalty_db))
    try:
        blocker.execute("LOCK TABLE celery_taskmeta, loyalty_wallet_sync_runs IN ACCESS EXCLUSIVE MODE")
        partition_when_active(pg, loyalty_db, proxy, "loyalty_checks:%", stop)
        stack = airflow_stack("LocalExecutor", deadline=deadline, extra_env={
            "LOYALTY_CHECKS_CATALOG": str(catalog_file),
            "AIRFLOW_CONN_LOYALTY_DB": pg_conn_via(proxy, pg, loyalty_db),
            "AIRFLOW_CONN_LOYALTY_HEARTBEAT": json.dumps(
                {"conn_type": "http", "host": f"{sink.url}/ping/e2e", "extra": {"fail_endpoint": "/fail"}}),
        })
        # Unpause just after a boundary, once the scheduler's next run is that boundary's, so that
        # the first run starts at its scheduled moment (not a run of an older slot started late).
        def next_slot() -> dt.datetime | None:
            return parse_ts(stack.get(f"/api/v2/dags/{DAG_ID}").get("next_dagrun_logical_date"))

        def slot_just_started():
            now = dt.datetime.now(dt.timezone.utc)
            slot = next_slot()
            return slot is not None and slot <= now and (now - slot).total_seconds() < 25

        if not slot_just_started():
            now = dt.datetime.now(dt.timezone.utc)
            boundary = now.replace(minute=now.minute - now.minute % 2, second=0, microsecond=0) + EVERY
            time.sleep((boundary - now).total_seconds())
            stack.wait_for("the next slot to become the DAG's next run", slot_just_started, deadline)
        status, body = stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        assert status == 200, stack.report(f"unpause -> {status}: {body}")

        def error_pages():
            got = {r["body"]["dedup_key"]: (at, r["body"]) for at, r in list(arrivals)
                   if r["path"].startswith("/pagerduty") and isinstance(r["body"], dict)}
            return got if set(got) >= ERROR_PAGES else None

        pages = stack.wait_for("both error pages", error_pages, deadline)
        run_id = unquote(urlsplit(next(iter(pages.values()))[1]["payload"]["custom_details"]["airflow_run_url"])
                         .path.rsplit("/", 1)[1])

        def runs():
            return stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]

        def finished():
            run = next((r for r in runs() if r["dag_run_id"] == run_id), None)
            return run if run and run["state"] in ("success", "failed") else None

        run = stack.wait_for(f"run {run_id} to finish", finished, deadline)
        tis = {ti["task_id"]: ti["state"] for ti in stack.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=100")["task_instances"]}
        t0, started, ended = parse_ts(run["logical_date"]), parse_ts(run["start_date"]), parse_ts(run["end_date"])

        def next_run():
            later = [r for r in runs() if parse_ts(r["logical_date"]) == t0 + EVERY and r["start_date"]]
            return later[0] if later else None

        following = stack.wait_for(f"the run of {t0 + EVERY:%H:%M}", next_run, deadline)
    finally:
        stop.set()
        blocker.rollback()
        blocker.close()
        proxy.stop()

    report = stack.report(f"run {run_id}: {run['state']} {tis}")
    assert run["run_type"] == "scheduled" and run["state"] == "failed", report
    assert set(pages) == ERROR_PAGES, report  # both errors, no alert
    for check in ("expiration_task_stale", "google_wallet_down"):
        assert tis.get(f"{check}.measure") == "failed", report
        assert tis.get(f"{check}.report_error") == "success", report  # not skipped by a dagrun timeout
    assert tis.get("heartbeat_failed") == "success" and tis.get("heartbeat") == "upstream_failed", report
    assert any(r["path"] == "/ping/e2e/fail" for _, r in arrivals), report
    last_page = max(at for at, _ in pages.values())
    assert last_page < started.timestamp() + spec.run_timeout.total_seconds(), report  # inside the run timeout
    assert ended - started < spec.run_timeout, report
    assert ended < t0 + EVERY, report  # the run left the next slot free
    late = (parse_ts(following["start_date"]) - (t0 + EVERY)).total_seconds()
    timing = (f"run {t0:%H:%M:%S} started {started:%H:%M:%S}, ended {ended:%H:%M:%S}; next run queued"
              f" {following['queued_at']}, started {following['start_date']}")
    assert late < ON_TIME, f"{timing}\n{report}"
    record_timing("scheduler: loyalty_db silent, last error page after the run started (short catalog)",
                  last_page - started.timestamp())
    b = budget.dag_budget(spec, cat.for_severity("P0"))
    times = ", ".join(f"{key.split('/')[1]} {at - started.timestamp():.1f} s" for key, (at, _) in sorted(pages.items()))
    with capsys.disabled():
        print(f"\n[e2e time budget] run {run_id}: started {(started - t0).total_seconds():.1f} s after T, error pages"
              f" {times} after its start, ended red after {(ended - started).total_seconds():.1f} s (run timeout"
              f" {budget.fmt(spec.run_timeout)}, worst path {budget.fmt(b.worst()[2])}); next run started"
              f" {late:.1f} s after its time ({timing})", flush=True)
