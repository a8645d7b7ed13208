"""`loyalty_backtest`: a backtest from the Airflow UI (trigger with params).

Params: `check`, `start` and `end` (ISO 8601; empty: the 7 days before the run),
`overrides` ("field=value" lines, as `--set`), `sweep` (optional FIELD=FROM:TO:STEP).
The task runs `loyalty_checks.backtest.run_backtest` read only on loyalty_db (or the
check's source), writes the summary table to its log, and stores the request (with the
run's id, `run_id`), the result (spec/backtest.md's JSON) and the PNG plot in
`loyalty_monitoring.backtests`. The console's backtest form triggers this DAG (as the
signed-in user) and shows the stored row of its run. Bad params fail the task at once
(no retries), naming the problem.

Nothing here touches a database, a connection or a Variable while the DAG file is
parsed: the catalog file is read for the list of checks, that is all.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from loyalty_checks.catalog import Catalog, Severity, catalog

log = logging.getLogger(__name__)
DAG_ID = "loyalty_backtest"
DEFAULT_DAYS = 7
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def request_from(params: dict[str, Any], run_after: dt.datetime) -> dict[str, Any]:
    """The backtest request of a run's params (empty start / end: the last 7 days)."""
    from loyalty_checks.backtest import BacktestError, parse_overrides, parse_time

    end_text = (params.get("end") or "").strip()
    end = parse_time(end_text, "end") if end_text else run_after.astimezone(dt.timezone.utc).replace(
        second=0, microsecond=0)
    start_text = (params.get("start") or "").strip()
    start = parse_time(start_text, "start") if start_text else end - dt.timedelta(days=DEFAULT_DAYS)
    raw = params.get("overrides") or ""
    lines = raw.splitlines() if isinstance(raw, str) else list(raw)
    if not params.get("check"):
        raise BacktestError("param 'check' is required")
    return {"check": params["check"], "start": start.isoformat(), "end": end.isoformat(),
            "overrides": parse_overrides(lines), "sweep": (params.get("sweep") or "").strip() or None}


def run(context) -> dict[str, Any]:
    """The task: backtest, log the summary, store JSON and PNG; returns the stored row's id."""
    from airflow.sdk.exceptions import AirflowFailException

    from loyalty_checks import connections
    from loyalty_checks.backtest import BacktestError, plot_png, report_text, resolve, run_backtest, without_series
    from loyalty_checks.store import backtests

    cat = catalog()
    dag_run = context["dag_run"]
    try:
        request = {**request_from(context["params"], dag_run.run_after), "run_id": dag_run.run_id}
        check = resolve(cat, request["check"], request["overrides"])
    except BacktestError as exc:
        raise AirflowFailException(f"bad backtest request: {exc}") from None
    requested_by = (context["params"].get("requested_by") or getattr(dag_run, "triggering_user_name", None)
                    or "airflow")
    source = connections.source_conn_id(check)
    try:
        with connections.postgres(source, check=check) as conn:
            result = run_backtest(request["check"], request["start"], request["end"], request["overrides"], conn,
                                  cat, sweep=request["sweep"], series=True)
    except BacktestError as exc:
        raise AirflowFailException(f"bad backtest request: {exc}") from None
    log.info("Backtest of %s requested by %s:\n%s", request["check"], requested_by, report_text(result))
    png = io.BytesIO()
    plot_png(result, png)
    stored = without_series(result)
    with connections.monitoring_db() as conn:
        backtest_id = backtests.insert(conn, request["check"], requested_by, request, stored, png.getvalue())
    log.info("Stored as loyalty_monitoring.backtests id %s (%d bytes of PNG)", backtest_id, png.tell())
    return {"id": backtest_id, "summary": result["summary"]}


def build_backtest_dag(cat: Catalog | None = None) -> DAG:
    """The DAG: schedule None, one task, params from the catalog's check ids."""
    from loyalty_checks.backtest import __doc__ as backtest_doc

    cat = cat or catalog()
    ids = [c.id for c in cat.checks]
    with DAG(
        dag_id=DAG_ID,
        description="Backtest a loyalty check over history with changed settings; nothing is sent",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        tags=["loyalty", "monitoring", "backtest"],
        doc_md=(__doc__ or "") + "\n\n" + (backtest_doc or ""),
        params={
            "check": Param(ids[0], enum=ids, description="the check to backtest"),
            "start": Param("", type=["null", "string"],
                           description="ISO 8601 start, exclusive (empty: 7 days before end)"),
            "end": Param("", type=["null", "string"], description="ISO 8601 end, inclusive (empty: now)"),
            "overrides": Param("", type=["null", "string"],
                               description="one field=value per line: threshold=150, for_runs=2, repeat_after=4h,"
                                           " params.NAME=..."),
            "sweep": Param("", type=["null", "string"],
                           description="optional FIELD=FROM:TO:STEP, e.g. threshold=80:200:10"),
            "requested_by": Param("", type=["null", "string"], description="who asks (default: the triggering user)"),
        },
        default_args={"owner": cat.dags[Severity.P1].owner, "retries": 0,
                      "execution_timeout": dt.timedelta(minutes=30)},
    ) as dag:

        @task(task_id="backtest")
        def backtest(**context):
            return run(context)

        backtest()
    return dag
