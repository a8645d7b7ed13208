"""The console's pages (server-rendered Jinja2): alerts now, a check, silences.

Links are relative (`root` is the way back to /loyalty/ from the page), so the pages work
under an `[api] base_url` with a sub-path and inside the Airflow UI's iframe. Every page
depends on auth.page_reader (a redirect to Airflow's login without a session); the
forms post back with the page's CSRF token and are checked by auth.check_csrf.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse

from loyalty_checks.console import api, chart, db, service
from loyalty_checks.console.auth import CSRF_FIELD, Viewer, check_csrf, csrf_token, page_reader, require_write
from loyalty_checks.console.common import now, render, visible, visible_check
from loyalty_checks.console.models import FieldError, Time, naive_as_utc, parse_silence

router = APIRouter()
PageViewer = Annotated[Viewer, Depends(page_reader)]
PAGE_SIZE = 100
DAYS = (1, 7, 30, 90, 365)
TIMELINE_MAX = 200


def base_context(request: Request, viewer: Viewer, depth: int, active: str, title: str) -> dict[str, Any]:
    root = "./" if depth == 0 else "../" * depth
    from loyalty_checks.catalog import catalog

    return {"viewer": viewer, "root": root, "airflow_root": root + "../", "csrf": csrf_token(viewer),
            "runbook": catalog().runbook_link,
            "csrf_field": CSRF_FIELD, "now": now(), "active": active, "title": title,
            "backtest_available": backtest_available()}


def backtest_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("loyalty_checks.backtest") is not None


@router.get("/")
def alerts_page(request: Request, viewer: PageViewer,
                page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                dag_id: Annotated[str | None, Query(max_length=250)] = None,
                severity: Literal["P0", "P1", "P2"] | None = None):
    """Alerts now (P0 first, per entity, paged) and every check with its latest evaluation."""
    cat, checks = visible(viewer)
    dag_note = None
    if dag_id:
        dag_checks = [c for c in checks if service.dag_of(cat, c) == dag_id]
        if dag_checks:
            checks = dag_checks
        elif dag_id == "loyalty_silences":
            dag_note = "The loyalty_silences DAG silences the checks below; the silences page lists them."
        else:
            dag_note = f"The DAG {dag_id} runs no loyalty checks."
            checks = []
    if severity:
        checks = [c for c in checks if c.severity == severity]
    with db.connection() as conn, db.reading(conn):
        shown, counts = service.alerts_page(conn, cat, checks, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        pages = max(1, math.ceil(counts["total"] / PAGE_SIZE))
        if page > pages:
            page = pages
            shown, counts = service.alerts_page(conn, cat, checks, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        summary = service.checks_summary(conn, cat, checks)
    return render("alerts.html", **base_context(request, viewer, 0, "alerts", "Loyalty alerts"),
                  alerts=shown, total=counts["total"], counts=counts, checks=summary, page=page, pages=pages,
                  first=(page - 1) * PAGE_SIZE + 1, dag_id=dag_id, severity=severity, dag_note=dag_note)


def _timeline(history: dict[str, Any]) -> list[dict[str, Any]]:
    """Notifications, errors, silences and alert state changes, newest first."""
    items = []
    for e in history["changes"]:
        if e["status"] == "error":
            items.append({"t": e["t"], "kind": "error", "text": e["error"] or "could not be evaluated",
                          "run_path": e["run_path"]})
        else:
            value = e["value"] if e["value"] is not None else "no data"
            items.append({"t": e["t"], "kind": e["alert_status"], "run_path": e["run_path"],
                          "text": f"alert {e['previous']} → {e['alert_status']} (value {value})"})
    for n in history["notifications"]:
        text = f"{n['event']} sent to {', '.join(n['channels'])}" if n["channels"] else f"{n['event']} not sent"
        if n["failed"]:
            text += f" (failed: {', '.join(n['failed'])}: {n['last_error'] or 'not delivered'})"
        items.append({"t": n["t"], "kind": "notification", "text": text, "run_path": None})
    for s in history["silences"]:
        who = f"entity {s['entity_id']}" if s["entity_id"] else "the whole check"
        items.append({"t": s["starts_at"], "kind": "silence",
                      "text": f"silence #{s['id']} of {who} by {s['author']} until {s['ends_at']}: {s['reason']}",
                      "run_path": None})
    for a in history.get("actions", []):
        what = "acknowledged" if a["action"] == "ack" else a["action"].replace("_", " ")
        items.append({"t": a["t"], "kind": "action", "text": f"{what} by {a['actor']} (from {a['source']})",
                      "run_path": None})
    items.sort(key=lambda i: i["t"], reverse=True)
    return items[:TIMELINE_MAX]


def window(days: int, since: dt.datetime | None, until: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """The check page's [since, until]: `days` ending now, or ending at `until`, or from `since`;
    both given: exactly that (at most the longest of DAYS). Times are models.Time, within
    1970..9998, so that a window added to either stays a datetime."""
    if since is not None and until is not None:
        if until <= since:
            raise FieldError("until", "must be after since")
        if until - since > dt.timedelta(days=DAYS[-1]):
            raise FieldError("until", f"a window of at most {DAYS[-1]} days")
        return since, until
    length = dt.timedelta(days=days)
    if since is not None:
        return since, since + length
    until = until or now()
    return until - length, until


@router.get("/checks/{check_id}")
def check_page(request: Request, check_id: Annotated[str, Path(max_length=63)], viewer: PageViewer,
               days: int = 7,
               since: Annotated[Time | None, Query(description="from (ISO 8601 with a zone)")] = None,
               until: Annotated[Time | None, Query(description="to (ISO 8601 with a zone); default now")] = None):
    """One check: value against threshold over time, timeline, alerts now, catalog settings."""
    if days not in DAYS:
        raise FieldError("days", f"must be one of {', '.join(map(str, DAYS))}")
    cat, check = visible_check(viewer, check_id)
    pinned = since is not None or until is not None
    since, until = window(days, since, until)
    with db.connection() as conn, db.reading(conn):
        history = service.page_history(conn, check, since, until, chart.WIDTH - chart.LEFT - chart.RIGHT,
                                       TIMELINE_MAX)
        alerts, counts = service.alerts_page(conn, cat, [check], limit=PAGE_SIZE)
        [summary] = service.checks_summary(conn, cat, [check])
    drawing = chart.build(history, check.threshold, check.recovery_threshold, since, until)
    return render("check.html", **base_context(request, viewer, 1, "checks", check.title),
                  check=check, dag_id=service.dag_of(cat, check), runbook_url=cat.runbook_link(check.id),
                  summary=summary, alerts=alerts, alerts_total=counts["total"], chart=drawing,
                  timeline=_timeline(history), days=days, day_choices=DAYS, history=history,
                  pinned=until.isoformat() if pinned else None, acknowledged=next(
                      ({"by": a["acknowledged_by"], "at": a["acknowledged_at"]} for a in alerts
                       if a.get("acknowledged_by")), None))


async def _button_pressed(request: Request, viewer: Viewer) -> None:
    """A write button's form: the right to write, and the form's CSRF token from this origin."""
    require_write(viewer)
    token = (await request.form()).get(CSRF_FIELD)
    check_csrf(viewer, request, token if isinstance(token, str) else None)


@router.post("/checks/{check_id}/ack")
async def acknowledge_form(request: Request, check_id: Annotated[str, Path(max_length=63)], viewer: PageViewer):
    """The check page's Acknowledge button (the signed-in user is the author)."""
    await _button_pressed(request, viewer)
    await run_in_threadpool(api.acknowledge, viewer, check_id)
    return RedirectResponse(f"../{quote(check_id)}", status_code=303)


FORM_FIELDS = ("check_id", "entity_id", "end", "duration", "until", "starts_at", "reason")


def _silences_page(request: Request, viewer: Viewer, status: int = 200, error: FieldError | None = None,
                   form: dict[str, str] | None = None, notice: str | None = None):
    form = {k: (form or {}).get(k) or "" for k in FORM_FIELDS}
    cat, checks = visible(viewer)
    with db.connection() as conn, db.reading(conn):
        rows = service.silences(conn, checks)
    return render("silences.html", status=status, **base_context(request, viewer, 0, "silences", "Silences"),
                  silences=rows, checks=checks, error=error, form=form, notice=notice)


@router.get("/silences")
def silences_page(request: Request, viewer: PageViewer,
                  check_id: Annotated[str | None, Query(max_length=63)] = None,
                  entity_id: Annotated[str | None, Query(max_length=200)] = None,
                  added: int | None = None, expired: int | None = None):
    """Active and planned silences; the form to add one (prefilled from a link) and to expire one."""
    notice = f"Silence #{added} added." if added else f"Silence #{expired} expired." if expired else None
    return _silences_page(request, viewer, form={"check_id": check_id or "", "entity_id": entity_id or "",
                                                 "duration": "2h"}, notice=notice)


@router.post("/silences")
async def add_silence_form(request: Request, viewer: PageViewer):
    """The add form: the author is the signed-in user; errors re-render the form (400)."""
    require_write(viewer)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    check_csrf(viewer, request, form.get(CSRF_FIELD))
    data = {k: form.get(k, "") for k in ("check_id", "entity_id", "duration", "reason")}
    if form.get("end") == "until":
        data["duration"] = ""
        data["until"] = naive_as_utc(form.get("until"))
    data["starts_at"] = naive_as_utc(form.get("starts_at"))
    try:
        silence = parse_silence(data, now())
        row = await run_in_threadpool(api.add, viewer, silence)
    except FieldError as exc:
        return await run_in_threadpool(_silences_page, request, viewer, 400, exc, form)
    return RedirectResponse(f"silences?added={row['id']}", status_code=303)


@router.post("/silences/{silence_id}/expire")
async def expire_silence_form(request: Request, silence_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
                              viewer: PageViewer):
    """The expire button of a listed silence."""
    await _button_pressed(request, viewer)
    await run_in_threadpool(api.expire, viewer, silence_id)
    return RedirectResponse(f"../../silences?expired={silence_id}", status_code=303)


def error_page(request: Request, status: int, message: str, field: str | None = None):
    """An HTML error page (no viewer context needed: it links back to the console only)."""
    depth = max(0, service_depth(request))
    return render("error.html", status=status, root="./" if depth == 0 else "../" * depth, status_code=status,
                  viewer=None, active="", backtest_available=False,
                  message=message, field=field, title=f"Error {status}")


def service_depth(request: Request) -> int:
    from loyalty_checks.console.common import relative_path

    return max(relative_path(request.scope).count("/") - 1, 0)
