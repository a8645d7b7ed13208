"""End to end under a real scheduler: a SCHEDULED run of loyalty_p0_checks pages PagerDuty.

Each scenario starts Airflow as separate processes (scheduler, dag-processor, api-server;
with Celery also a worker on Redis) on a fresh PostgreSQL metadata database, seeds the
loyalty database relative to the wall clock with a stale point-expiration task, unpauses
the DAG through the REST API and waits for the PagerDuty trigger at the capture server.
With catchup=False and a `*/5 * * * *` trigger timetable, unpausing creates the run of the
latest past 5-minute boundary at once: its logical time T is that boundary.

`make test-e2e` runs only these (`pytest -m e2e tests/e2e`); about a minute each.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.conftest import ROUTING_KEY
from tests.e2e.conftest import DAG_ID, REDIS_URL, SCENARIO_TIMEOUT, AirflowStack, redis_unavailable
from tests.sql.rows import H, insert

pytestmark = pytest.mark.e2e

DEDUP_KEY = "loyalty/expiration_task_stale"


def seed_stale_expiration(db, now: dt.datetime) -> None:
    """The last successful loyalty.expire_points finished 31 h ago: expiration_task_stale fires."""
    insert(db, "celery_taskmeta", id=1, task_id="e2e-last-success", status="SUCCESS",
           name="loyalty.expire_points", date_done=(now - 31 * H).replace(tzinfo=None))


def parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def scheduled_run_pages(stack: AirflowStack, db, sink, deadline: float, capsys) -> tuple[dict, dict]:
    """Unpause, wait for the page and for its run to finish; returns (the run, its task instances)."""
    arrivals: list[tuple[float, dict]] = []
    sink.on_record = lambda record: arrivals.append((time.time(), record))
    now = dt.datetime.now(dt.timezone.utc)
    seed_stale_expiration(db, now)

    unpaused_at = time.time()
    status, body = stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200 and body["is_paused"] is False, stack.report(f"unpause -> {status}: {body}")

    def page():
        return next(((at, r["body"]) for at, r in list(arrivals)
                     if r["path"].startswith("/pagerduty") and isinstance(r["body"], dict)
                     and r["body"].get("dedup_key") == DEDUP_KEY), None)

    page_at, trigger = stack.wait_for(f"the PagerDuty trigger {DEDUP_KEY}", page, deadline)
    run_url = trigger["payload"]["custom_details"]["airflow_run_url"]
    assert run_url.startswith(f"{stack.api_url}/dags/{DAG_ID}/runs/"), stack.report(f"run link {run_url}")
    run_id = unquote(urlsplit(run_url).path.rsplit("/", 1)[1])

    def finished():
        runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-run_after&limit=20")["dag_runs"]
        run = next((r for r in runs if r["dag_run_id"] == run_id), None)
        return run if run and run["state"] in ("success", "failed") else None

    run = stack.wait_for(f"run {run_id} to finish (GET /api/v2/dags/{DAG_ID}/dagRuns)", finished, deadline)
    tis = {ti["task_id"]: ti for ti in stack.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances")["task_instances"]}
    states = {task_id: ti["state"] for task_id, ti in tis.items()}

    assert run["run_type"] == "scheduled", stack.report(f"run {run}")
    assert run["state"] == "success", stack.report(f"run {run_id} is {run['state']}: {states}")
    t = parse_ts(run["logical_date"])
    assert t.minute % 5 == 0 and t.second == 0 and t <= now + dt.timedelta(minutes=5), run
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == ROUTING_KEY, trigger
    assert trigger["payload"]["severity"] == "critical", trigger
    assert parse_ts(trigger["payload"]["custom_details"]["evaluated_at"]) == t, (trigger, run)
    assert trigger["payload"]["custom_details"]["value"] > 26, trigger
    assert states["expiration_task_stale.notify_pagerduty"] == "success", states
    assert states["google_wallet_down.notify_pagerduty"] == "skipped", states  # no data: does not fire
    assert tis["expiration_task_stale.measure"]["pool"] == "loyalty_db", tis["expiration_task_stale.measure"]
    pages = [r["body"] for _, r in arrivals if r["path"].startswith("/pagerduty")]
    assert [p["dedup_key"] for p in pages] == [DEDUP_KEY], stack.report(f"pages: {pages}")
    slack = [r["body"]["text"] for _, r in arrivals if r["path"].startswith("/slack/alerts")]
    assert len(slack) == 1 and slack[0].startswith("[P0] FIRING: Point expiration task stale"), slack

    with capsys.disabled():
        print(f"\n[e2e {stack.name}] scheduled run {run_id} (T {t:%H:%M:%S}): page "
              f"{page_at - t.timestamp():.1f} s after T, {page_at - unpaused_at:.1f} s after unpausing; "
              f"run queued {parse_ts(run['queued_at']).timestamp() - unpaused_at:.1f} s after unpausing, "
              f"took {run['duration']:.1f} s", flush=True)
    return run, tis


def test_local_executor_scheduled_run_pages(airflow_stack, db, sink, capsys):
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    stack = airflow_stack("LocalExecutor", deadline=deadline)
    with capsys.disabled():
        print(f"\n[e2e {stack.name}] migrated and started in {time.monotonic() - started:.1f} s", flush=True)
    scheduled_run_pages(stack, db, sink, deadline, capsys)
    assert_warm(stack, "scheduler")  # the LocalExecutor's workers are forked from the scheduler


def assert_warm(stack: AirflowStack, parent: str) -> None:
    """The worker parent preloaded (config/airflow_local_settings.py) and nothing failed to load."""
    log = stack.procs[parent][1].read_text(errors="replace")
    assert "loyalty_checks.warm: preloaded" in log, stack.report(f"{parent} did not preload")
    assert "loyalty_checks.warm: not preloaded" not in log, stack.report(f"{parent}: a preload failed")


@pytest.fixture
def celery_queue():
    """A queue of this test's own on the shared Redis (skips when Redis or the provider is missing)."""
    reason = redis_unavailable(REDIS_URL)
    if reason:
        pytest.skip(reason)
    queue = f"loyalty_e2e_{uuid.uuid4().hex[:8]}"
    yield queue
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*"))  # the queue and kombu's bindings of it
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_celery_executor_scheduled_run_pages(celery_queue, airflow_stack, db, sink, capsys):
    started = time.monotonic()
    deadline = started + SCENARIO_TIMEOUT
    stack = airflow_stack("CeleryExecutor", celery_broker=REDIS_URL, celery_queue=celery_queue, deadline=deadline)
    with capsys.disabled():
        print(f"\n[e2e {stack.name}] migrated and started in {time.monotonic() - started:.1f} s", flush=True)
    _, tis = scheduled_run_pages(stack, db, sink, deadline, capsys)

    # The distributed path: every task went through the broker to the Celery worker.
    assert {ti["queue"] for ti in tis.values()} == {celery_queue}, {k: ti["queue"] for k, ti in tis.items()}
    worker_log = stack.procs["celery-worker"][1].read_text(errors="replace")
    executed = worker_log.count("execute_workload")
    assert executed >= 1 and "succeeded" in worker_log, stack.report("the Celery worker ran no task")
    assert_warm(stack, "celery-worker")  # its pool processes are forked from it
