"""Alert state for the console tests, made by the real thing: the rate_limit_spikes task
group of the P1 DAG runs with dag.test() at several times T on rows that make stores
spike, and its notifications really go to the capture server (Slack).

History (T = the current hour): store 12 spikes at T-30h (trigger) and is quiet at
T-29h (resolve); the checks are clean at T-3h..T-1h; at T (the whole DAG) stores 10
(150/min, a name full of HTML) and 12 (101/min) fire: one Slack trigger.
"""

from __future__ import annotations

import datetime as dt

from tests.sql.rows import MIN, H, merchant, store

P1 = "loyalty_p1_checks"
CHECK = "rate_limit_spikes"
HOSTILE = "<script>alert('x')</script> Burger & <b>Co</b>"


def now_hour() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def spike(db, store_id: int, minute: dt.datetime, count: int) -> None:
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT %s, %s, 'POST', '/api/loyalty' FROM generate_series(1, %s)", (store_id, minute, count))


def run_group(dagbag, t: dt.datetime, group: str | None = CHECK):
    """Run one check's task group of the P1 DAG at T (None: the whole DAG; retries off); returns the DAG run."""
    dag = dagbag.get_dag(P1)
    sub = dag if group is None else dag.partial_subset(
        task_ids=[task.task_id for task in dag.tasks if task.task_id.startswith(f"{group}.")],
        include_downstream=True, include_upstream=False)
    retries = {task.task_id: task.retries for task in sub.tasks}  # the session's DagBag is shared: restored
    for task in sub.tasks:
        task.retries = 0
    try:
        dr = sub.test(logical_date=t)
    finally:
        for task in sub.tasks:
            task.retries = retries[task.task_id]
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states.get(f"{group or CHECK}.measure") == "success", states
    return dr


def seed(pg, db_name: str, dagbag, sink) -> dict:
    from airflow.settings import Session
    from sqlalchemy import text

    with Session() as session:  # fail-open markers other tests may have left
        session.execute(text("DELETE FROM variable WHERE key LIKE 'loyalty_checks.%'"))
        session.commit()

    t = now_hour()
    with pg.connect(db_name, autocommit=True) as db:
        merchant(db, 1, "Acme")
        store(db, 10, 1, HOSTILE)
        store(db, 11, 1, "Quiet Store")
        store(db, 12, 1, "Busy Store")
        spike(db, 12, t - 30 * H - 20 * MIN, 130)
        spike(db, 10, t - 30 * MIN, 150)
        spike(db, 12, t - 10 * MIN, 101)
        spike(db, 11, t - 20 * MIN, 40)
    sink.take("/")
    runs = {}
    for at in (t - 30 * H, t - 29 * H, t - 3 * H, t - 2 * H, t - H):
        runs[at] = run_group(dagbag, at)
    runs[t] = run_group(dagbag, t, group=None)  # the whole DAG last: the UI shows it as it is
    sent = [r["body"] for r in sink.take("/slack")]
    return {"t": t, "run_id": runs[t].run_id, "slack": sent, "firing": {"10": 150.0, "12": 101.0}}
