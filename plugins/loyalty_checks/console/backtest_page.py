"""/loyalty/backtest: a form over loyalty_checks.backtest (shared/spec/backtest.md) with its
chart and summary. Running one reads the loyalty database for every scheduled T of the
period, so it needs the same right as a silence (trigger `loyalty_silences`), the form's
CSRF token, and a bounded period (MAX_EVALUATIONS).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse

from loyalty_checks.console import db
from loyalty_checks.console.auth import CSRF_FIELD, Viewer, check_csrf, page_reader, require_write
from loyalty_checks.console.common import now, render, visible, visible_check
from loyalty_checks.console.models import FieldError, naive_as_utc
from loyalty_checks.console.pages import backtest_available, base_context
from loyalty_checks.store import backtests
from loyalty_checks.units import cron_interval

router = APIRouter()
PageViewer = Annotated[Viewer, Depends(page_reader)]
MAX_EVALUATIONS = 5000      # about 17 days of a P0 check, 200 days of a P1 check
MAX_TEXT = 2000
FIELDS = ("check_id", "start", "end", "overrides", "sweep")
# Where a BacktestError's message points, by its prefix.
ERROR_FIELDS = (("--check", "check_id"), ("--start", "start"), ("--end", "end"), ("--sweep", "sweep"),
                ("--set", "overrides"))


def _require_module():
    if not backtest_available():
        raise HTTPException(404, "The backtest is not installed (loyalty_checks.backtest is missing)")
    from loyalty_checks import backtest

    return backtest


def _page(request: Request, viewer: Viewer, form: dict[str, str], status: int = 200,
          error: FieldError | None = None, result: dict[str, Any] | None = None, png: str | None = None,
          stored: dict[str, Any] | None = None, depth: int = 0):
    _, checks = visible(viewer)
    with db.connection() as conn, db.reading(conn):
        recent = backtests.recent(conn, [c.id for c in checks])
    return render("backtest.html", status=status, **base_context(request, viewer, depth, "backtest", "Backtest"),
                  checks=checks, form=form, error=error, result=result, png=png, max_evaluations=MAX_EVALUATIONS,
                  recent=recent, stored=stored)


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


def run(viewer: Viewer, form: dict[str, str]) -> int:
    """Validate the form, run the backtest on the check's source database, store it (as the
    loyalty_backtest DAG does, requested by the viewer); returns the stored backtest's id."""
    backtest = _require_module()
    from loyalty_checks import connections, quality

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
    sweep = form.get("sweep", "").strip() or None
    try:
        overrides = backtest.parse_overrides(form.get("overrides", "").splitlines())
        backtest.resolve(cat, check.id, overrides)  # bad overrides: a 400 before any query
        source = connections.LOYALTY_DB if check.source == connections.LOYALTY_DB else quality.monitoring_conn_id()
        with connections.postgres(source, check=check) as conn:
            result = backtest.run_backtest(check.id, times["start"], times["end"], overrides, conn, cat,
                                           sweep=sweep, series=True)
    except backtest.BacktestError as exc:
        message = str(exc)
        raise FieldError(_field_of(message), message.replace("--set ", "").replace("--set", "overrides")) from None
    image = io.BytesIO()
    backtest.plot_png(result, image)
    request = {"check": check.id, "start": times["start"].isoformat(), "end": times["end"].isoformat(),
               "overrides": overrides, "sweep": sweep}
    with db.connection() as conn:
        return backtests.insert(conn, check.id, viewer.name, request, backtest.without_series(result),
                                image.getvalue())


@router.post("/backtest")
async def backtest_run(request: Request, viewer: PageViewer):
    """Run a backtest from the form (needs the right to trigger loyalty_silences and the form's token)."""
    _require_module()
    require_write(viewer)
    raw = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    check_csrf(viewer, request, raw.get(CSRF_FIELD))
    form = {name: raw.get(name, "") for name in FIELDS}
    try:
        backtest_id = await run_in_threadpool(run, viewer, form)
    except FieldError as exc:
        return await run_in_threadpool(_page, request, viewer, form, 400, exc)
    return RedirectResponse(f"backtest/{backtest_id}", status_code=303)


@router.get("/backtest/{backtest_id}")
def backtest_result(request: Request, viewer: PageViewer, backtest_id: Annotated[int, Path(ge=1, le=2**63 - 1)]):
    """A stored backtest (the console's or the loyalty_backtest DAG's): its chart and figures."""
    _require_module()
    with db.connection() as conn, db.reading(conn):
        stored = backtests.get(conn, backtest_id)
    if stored is None:
        raise HTTPException(404, f"No backtest with id {backtest_id}")
    visible_check(viewer, stored["check_id"])
    asked = stored["request"] or {}
    overrides = asked.get("overrides") or {}
    form = {"check_id": stored["check_id"], "start": str(asked.get("start") or ""), "end": str(asked.get("end") or ""),
            "overrides": "\n".join(f"{k}={v}" for k, v in overrides.items()) if isinstance(overrides, dict) else "",
            "sweep": str(asked.get("sweep") or "")}
    png = base64.b64encode(bytes(stored["plot"])).decode() if stored["plot"] else None
    return _page(request, viewer, form, result=stored["result"], png=png, stored=stored, depth=1)
