"""/loyalty/backtest: a form over loyalty_checks.backtest (shared/spec/backtest.md) with its
chart and summary.

The api-server never connects to `loyalty_db`: posting the form (the same right as a
silence, trigger `loyalty_silences`, and the form's CSRF token) validates it here (a 400
naming the field, a bounded period: MAX_EVALUATIONS) and then triggers a run of the
`loyalty_backtest` DAG with those params, as the signed-in user, the way Airflow's own
REST API and CLI do (airflow.api.common.trigger_dag). A worker runs the backtest on the
check's database and stores it in `loyalty_monitoring.backtests` with the run's id. The
form answers 303 to the run's page, `backtest/runs/<run id>`: the run's state from
Airflow's metadata database (reloading while queued or running, a link to the run in
the Airflow UI) and, once the DAG stored it, the result and its plot.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse

from loyalty_checks.console import db, service
from loyalty_checks.console.auth import CSRF_FIELD, Viewer, check_csrf, page_reader, require_write
from loyalty_checks.console.common import now, render, visible, visible_check
from loyalty_checks.console.models import FieldError, naive_as_utc
from loyalty_checks.console.pages import backtest_available, base_context
from loyalty_checks.store import backtests
from loyalty_checks.units import cron_interval

router = APIRouter()
PageViewer = Annotated[Viewer, Depends(page_reader)]
DAG_ID = "loyalty_backtest"  # loyalty_checks.backtest_dag.DAG_ID (not imported: it imports the Task SDK)
MAX_EVALUATIONS = 5000      # about 17 days of a P0 check, 200 days of a P1 check
MAX_TEXT = 2000
RELOAD_SECONDS = 5          # the run's page reloads itself while the run is queued or running
PENDING_LIMIT = 10
WAITING = ("queued", "running")
FIELDS = ("check_id", "start", "end", "overrides", "sweep")
# Where a BacktestError's message points, by its prefix.
ERROR_FIELDS = (("--check", "check_id"), ("--start", "start"), ("--end", "end"), ("--sweep", "sweep"),
                ("--set", "overrides"))


def _require_module():
    if not backtest_available():
        raise HTTPException(404, "The backtest is not installed (loyalty_checks.backtest is missing)")
    from loyalty_checks import backtest

    return backtest


# ---------------------------------------------------------------- Airflow's runs of loyalty_backtest

def _run_dict(dr, paused: bool | None = None) -> dict[str, Any]:
    conf = dr.conf if isinstance(dr.conf, dict) else {}
    return {"run_id": dr.run_id, "state": str(getattr(dr.state, "value", dr.state) or "queued"),
            "conf": {k: "" if conf.get(k) is None else str(conf.get(k))
                     for k in ("check", "start", "end", "overrides", "sweep")},
            "queued_at": dr.queued_at, "start_date": dr.start_date, "end_date": dr.end_date,
            "user": dr.triggering_user_name, "paused": paused, "path": service.run_path(DAG_ID, dr.run_id),
            "page": "runs/" + quote(dr.run_id, safe="")}


def airflow_run(run_id: str) -> dict[str, Any] | None:
    """A run of the loyalty_backtest DAG from Airflow's metadata database, or None."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id))
        if dr is None:
            return None
        paused = session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == DAG_ID))
        return _run_dict(dr, bool(paused))


def waiting_runs(check_ids: list[str], limit: int = PENDING_LIMIT) -> list[dict[str, Any]]:
    """The queued and running backtests of these checks, newest first (their results are not stored yet)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        found = session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.state.in_(WAITING))
                                .order_by(DagRun.run_after.desc()).limit(limit * 5)).all()
        runs = [_run_dict(dr) for dr in found]
    return [r for r in runs if r["conf"]["check"] in check_ids][:limit]


def trigger(viewer: Viewer, conf: dict[str, str]) -> str:
    """Trigger a loyalty_backtest run with `conf` as its params, the viewer as its triggering
    user; returns its run id. The same core function as `airflow dags trigger` (and the same
    steps as the REST API's trigger endpoint): the DAG's latest serialized version, its
    params validated against `conf`, a queued manual run the scheduler starts."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    for _ in range(3):
        try:
            with create_session() as session:
                dm = session.scalar(select(DagModel).where(DagModel.dag_id == DAG_ID, ~DagModel.is_stale))
                if dm is None:
                    raise DagNotFound(DAG_ID)
                if dm.has_import_errors:
                    raise HTTPException(503, f"The {DAG_ID} DAG has import errors: see the Airflow UI")
                dr = trigger_dag(DAG_ID, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=viewer.name,
                                 conf=conf, session=session)
                return dr.run_id
        except DagRunAlreadyExists:  # another request in the same microsecond: a new run id
            continue
        except DagNotFound:
            raise HTTPException(503, f"The {DAG_ID} DAG is not deployed (not in Airflow's metadata database):"
                                     " backtests run on a worker through it") from None
        except ValueError as exc:  # ParamValidationError: the DAG's params (its check list) disagree
            raise FieldError("check_id", f"the {DAG_ID} DAG refused the params: {exc}") from None
    raise HTTPException(503, f"Could not trigger {DAG_ID}: run ids collided, try again")


# ---------------------------------------------------------------- pages

def _page(request: Request, viewer: Viewer, form: dict[str, str], status: int = 200,
          error: FieldError | None = None, result: dict[str, Any] | None = None, png: str | None = None,
          stored: dict[str, Any] | None = None, run: dict[str, Any] | None = None, depth: int = 0):
    _, checks = visible(viewer)
    ids = [c.id for c in checks]
    with db.connection() as conn, db.reading(conn):
        recent = backtests.recent(conn, ids)
    pending = [r for r in waiting_runs(ids) if run is None or r["run_id"] != run["run_id"]]
    return render("backtest.html", status=status, **base_context(request, viewer, depth, "backtest", "Backtest"),
                  checks=checks, form=form, error=error, result=result, png=png, max_evaluations=MAX_EVALUATIONS,
                  recent=recent, stored=stored, run=run, pending=pending, dag_id=DAG_ID,
                  reload_seconds=RELOAD_SECONDS)


def _defaults() -> dict[str, str]:
    end = now().replace(minute=0, second=0, microsecond=0)
    return {"check_id": "", "start": (end - dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
            "end": end.strftime("%Y-%m-%dT%H:%M"), "overrides": "", "sweep": ""}


@router.get("/backtest")
def backtest_form(request: Request, viewer: PageViewer, check_id: str | None = None):
    _require_module()
    form = _defaults()
    if check_id:
        form["check_id"] = check_id
    return _page(request, viewer, form)


def _field_of(message: str) -> str:
    for prefix, field in ERROR_FIELDS:
        if message.startswith(prefix):
            return field
    return "overrides"


def validate(viewer: Viewer, form: dict[str, str]) -> dict[str, str]:
    """The form as the loyalty_backtest DAG's params, or FieldError naming what is wrong. Pure:
    nothing here reads a database (the check's SQL runs on the worker)."""
    backtest = _require_module()
    from loyalty_checks import quality

    for name in FIELDS:
        if len(form.get(name, "")) > MAX_TEXT:
            raise FieldError(name, f"at most {MAX_TEXT} characters")
    if not form.get("check_id"):
        raise FieldError("check_id", "choose a check")
    cat, check = visible_check(viewer, form["check_id"])
    times = {}
    for name in ("start", "end"):
        try:
            times[name] = quality.parse_time(naive_as_utc(form.get(name)) or "", name)
        except quality.UsageError as exc:
            raise FieldError(name, str(exc).removeprefix(f"{name}: ")) from None
    if times["end"] <= times["start"]:
        raise FieldError("end", "must be after start")
    interval = cron_interval(cat.dags[check.severity].schedule)
    if (times["end"] - times["start"]) / interval > MAX_EVALUATIONS:
        raise FieldError("end", f"the period holds more than {MAX_EVALUATIONS:,} evaluations of this check "
                                f"(one every {interval}); shorten it")
    sweep = form.get("sweep", "").strip()
    try:
        overrides = backtest.parse_overrides(form.get("overrides", "").splitlines())
        backtest.resolve(cat, check.id, overrides)
        if sweep:  # as run_backtest checks it, before the run rather than in it
            field, values = backtest.parse_sweep(sweep)
            for value in values:
                backtest.resolve(cat, check.id, {**overrides, field: value}, where="--sweep")
    except backtest.BacktestError as exc:
        message = str(exc)
        raise FieldError(_field_of(message), message.replace("--set ", "").replace("--set", "overrides")) from None
    return {"check": check.id, "start": times["start"].isoformat(), "end": times["end"].isoformat(),
            "overrides": "\n".join(f"{k}={v}" for k, v in overrides.items()), "sweep": sweep}


def start(viewer: Viewer, form: dict[str, str]) -> str:
    """Validate the form and trigger the loyalty_backtest DAG with it; returns the run's id."""
    return trigger(viewer, validate(viewer, form))


@router.post("/backtest")
async def backtest_run(request: Request, viewer: PageViewer):
    """Start a backtest from the form (needs the right to trigger loyalty_silences and the form's token):
    a run of the loyalty_backtest DAG, whose page the answer redirects to."""
    _require_module()
    require_write(viewer)
    raw = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    check_csrf(viewer, request, raw.get(CSRF_FIELD))
    form = {name: raw.get(name, "") for name in FIELDS}
    try:
        run_id = await run_in_threadpool(start, viewer, form)
    except FieldError as exc:
        return await run_in_threadpool(_page, request, viewer, form, 400, exc)
    return RedirectResponse("backtest/runs/" + quote(run_id, safe=""), status_code=303)


def _form_of(request: dict[str, Any]) -> dict[str, str]:
    overrides = request.get("overrides") or {}
    if isinstance(overrides, dict):
        overrides = "\n".join(f"{k}={v}" for k, v in overrides.items())
    return {"check_id": str(request.get("check") or ""), "start": str(request.get("start") or ""),
            "end": str(request.get("end") or ""), "overrides": str(overrides), "sweep": str(request.get("sweep") or "")}


def _shown(request: Request, viewer: Viewer, stored: dict[str, Any] | None, run: dict[str, Any] | None,
           depth: int):
    png = base64.b64encode(bytes(stored["plot"])).decode() if stored and stored["plot"] else None
    asked = (stored["request"] or {}) if stored else {}
    form = _form_of({**(run["conf"] if run else {}), **asked, "check": (stored or {}).get("check_id")
                     or (run["conf"]["check"] if run else "")})
    return _page(request, viewer, form, result=stored["result"] if stored else None, png=png, stored=stored,
                 run=run, depth=depth)


@router.get("/backtest/runs/{run_id}")
def backtest_run_page(request: Request, viewer: PageViewer,
                      run_id: Annotated[str, Path(min_length=1, max_length=250)]):
    """A run of the loyalty_backtest DAG: its state, and its stored result once there is one."""
    _require_module()
    run = airflow_run(run_id)
    if run is None:
        raise HTTPException(404, f"No run {run_id!r} of the {DAG_ID} DAG")
    visible_check(viewer, run["conf"]["check"])
    with db.connection() as conn, db.reading(conn):
        stored = backtests.of_run(conn, run_id)
    if stored is not None:
        visible_check(viewer, stored["check_id"])
    return _shown(request, viewer, stored, run, depth=2)


@router.get("/backtest/{backtest_id}")
def backtest_result(request: Request, viewer: PageViewer, backtest_id: Annotated[int, Path(ge=1, le=2**63 - 1)]):
    """A stored backtest (of any loyalty_backtest run): its chart and figures, and its run."""
    _require_module()
    with db.connection() as conn, db.reading(conn):
        stored = backtests.get(conn, backtest_id)
    if stored is None:
        raise HTTPException(404, f"No backtest with id {backtest_id}")
    visible_check(viewer, stored["check_id"])
    run_id = (stored["request"] or {}).get("run_id")
    run = airflow_run(run_id) if isinstance(run_id, str) and run_id else None
    return _shown(request, viewer, stored, run, depth=1)
