"""Run a DAG run that was triggered (queued) but that no scheduler picks up, the way
dag.test() runs its own: the run set running as the scheduler starts a queued run, then
each schedulable task instance run in this process through the in-process execution API,
until the run is finished. The console tests' api-server has no scheduler; this is their
scheduler and worker, in the api-server's environment (its metadata database).

    python -m tests.console.run_triggered DAG_ID RUN_ID      # prints the run's final state
"""

from __future__ import annotations

import sys
import time

TIMEOUT = 300  # seconds for the whole run


def run(dag_id: str, run_id: str) -> str:
    from airflow._shared.timezones import timezone
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dag import DagModel
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.settings import Session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    session = Session()
    dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if dr is None:
        raise SystemExit(f"no run {run_id!r} of {dag_id!r}")
    if dr.state != DagRunState.QUEUED:
        raise SystemExit(f"run {run_id!r} is {dr.state}, not queued")
    dr.dag = DBDagBag().get_dag_for_run(dr, session=session)
    dr.state, dr.start_date = DagRunState.RUNNING, timezone.utcnow()
    session.commit()
    fileloc = session.scalar(select(DagModel.fileloc).where(DagModel.dag_id == dag_id))
    dag = DagBag(dag_folder=fileloc).get_dag(dag_id)  # its file only, as a worker parses it
    deadline = time.monotonic() + TIMEOUT
    while dr.state == DagRunState.RUNNING:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id!r} still running after {TIMEOUT} s")
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state, ti.scheduled_dttm = TaskInstanceState.SCHEDULED, timezone.utcnow()
        session.commit()
        scheduled = [ti for ti in dr.get_task_instances(session=session) if ti.state == TaskInstanceState.SCHEDULED]
        if not scheduled:
            time.sleep(0.2)
        for ti in scheduled:
            _run_task(ti=ti, task=dag.task_dict[ti.task_id])
    return str(getattr(dr.state, "value", dr.state))


if __name__ == "__main__":
    print(run(sys.argv[1], sys.argv[2]))
