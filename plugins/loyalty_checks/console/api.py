"""The JSON API of the console (shared/spec/console.md), under /loyalty/api.

Every route depends on auth.api_reader or auth.api_writer: 401 without a valid token,
403 without the permission. Database work runs in FastAPI's thread pool (sync routes).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from loyalty_checks.console import db, service
from loyalty_checks.console.auth import Viewer, api_reader, api_writer
from loyalty_checks.console.common import json_response, now, visible, visible_check
from loyalty_checks.console.models import (
    MAX_BODY,
    Acknowledged,
    Alerts,
    Checks,
    Error,
    FieldError,
    History,
    Silence,
    SilenceRequest,
    Silences,
    Time,
    json_object,
    parse_silence,
)
from loyalty_checks.store import console as store

# What every route may answer besides its result (documented in the OpenAPI document; app.py sends them).
ERRORS = {
    400: {"model": Error, "description": "A bad value: `field` names it (a parameter, a body field, or `body`)"},
    401: {"model": Error, "description": "No valid Airflow token (Authorization: Bearer, or the UI's _token cookie)",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    403: {"model": Error, "description": "Signed in, but without the permission (reading the loyalty DAGs; "
                                         "adding or expiring a silence: triggering loyalty_silences)"},
}
NOT_FOUND = {404: {"model": Error, "description": "No such check or silence (that the caller may see)"}}
router = APIRouter(prefix="/api", responses=ERRORS)
Reader = Annotated[Viewer, Depends(api_reader)]
Writer = Annotated[Viewer, Depends(api_writer)]
DEFAULT_HISTORY = dt.timedelta(days=7)
MAX_HISTORY_POINTS = 200_000
DEFAULT_HISTORY_POINTS = 2_500  # a week of a P0 check (2,016); older ones on request (`limit`), flagged `truncated`


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request's body, refused (400 naming `body`) as soon as it passes `limit` bytes."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > limit:
        raise FieldError("body", f"too large: at most {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise FieldError("body", f"too large: at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def filter_checks(viewer: Viewer, check_id: str | None, severity: str | None, dag_id: str | None):
    cat, checks = visible(viewer)
    if check_id is not None:
        if check_id not in {c.id for c in cat.checks}:
            raise FieldError("check_id", f"unknown check {check_id!r}")
        checks = [c for c in checks if c.id == check_id]
    if severity is not None:
        checks = [c for c in checks if c.severity == severity]
    if dag_id is not None:
        checks = [c for c in checks if service.dag_of(cat, c) == dag_id]
    return cat, checks


ALERTS_PAGE = 100       # alerts per page of GET /api/alerts by default
MAX_ALERTS_PAGE = 1000  # and at most
PAGE_HEADERS = {
    "Link": {"schema": {"type": "string"}, "description": '`<URL of the next page>; rel="next"` (absent on the last page)'},
    "X-Total-Count": {"schema": {"type": "integer"}, "description": "How many alerts there are on all pages"},
}


@router.get("/alerts", responses={200: {"model": Alerts, "headers": PAGE_HEADERS}})
def get_alerts(request: Request, viewer: Reader,
               check_id: Annotated[str | None, Query(max_length=63)] = None,
               severity: Literal["P0", "P1", "P2"] | None = None,
               dag_id: Annotated[str | None, Query(max_length=250)] = None,
               state: Literal["firing", "pending"] | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_ALERTS_PAGE, description=(
                   f"alerts per page: {ALERTS_PAGE} by default, at most {MAX_ALERTS_PAGE}"))] = ALERTS_PAGE,
               offset: Annotated[int, Query(ge=0, le=10**9, description=(
                   "how many alerts of the ranking to skip (the `next` link carries it)"))] = 0):
    """Every alert now firing or pending, P0 first (optionally one check, severity, DAG or state), one page at
    a time: `limit` alerts from `offset`. `total` counts the alerts of all pages; `next` is the URL of the
    next page, null on the last one (also as the `Link: <...>; rel="next"` and `X-Total-Count` headers)."""
    cat, checks = filter_checks(viewer, check_id, severity, dag_id)
    with db.connection() as conn, db.reading(conn):
        alerts, counts = service.alerts_page(conn, cat, checks, state, offset, limit, t=now())
    total = counts["total"]
    following = str(request.url.include_query_params(offset=offset + limit, limit=limit)) \
        if offset + limit < total else None
    response = json_response({"alerts": alerts, "total": total, "offset": offset, "limit": limit,
                              "next": following})
    response.headers["X-Total-Count"] = str(total)
    if following:
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


@router.get("/checks", responses={200: {"model": Checks}})
def get_checks(viewer: Reader):
    """Every catalog check (of the DAGs the caller may read) with its latest evaluation."""
    cat, checks = visible(viewer)
    with db.connection() as conn, db.reading(conn):
        return json_response({"checks": service.checks_summary(conn, cat, checks)})


@router.get("/checks/{check_id}/history", responses={200: {"model": History}, **NOT_FOUND})
def get_history(check_id: Annotated[str, Path(max_length=63)], viewer: Reader,
                since: Annotated[Time | None, Query(description="ISO 8601 with a zone; default 7 days ago")] = None,
                until: Annotated[Time | None, Query(description="ISO 8601 with a zone; default now")] = None,
                limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_POINTS)] = DEFAULT_HISTORY_POINTS):
    """A check's evaluations, notifications and silences since `since`."""
    _, check = visible_check(viewer, check_id)
    since = since or now() - DEFAULT_HISTORY
    if until is not None and until < since:
        raise FieldError("until", "must not be before since")
    with db.connection() as conn, db.reading(conn):
        return json_response(service.history(conn, check, since, until, limit))


@router.get("/silences", responses={200: {"model": Silences}})
def get_silences(viewer: Reader):
    """Active and planned silences of the checks the caller may read."""
    _, checks = visible(viewer)
    with db.connection() as conn, db.reading(conn):
        return json_response({"silences": service.silences(conn, checks)})


def add(viewer: Viewer, request: SilenceRequest) -> dict:
    """Add a silence as `viewer` (the author), through loyalty_checks.silences."""
    from loyalty_checks.silences import SilenceError, add_silence

    visible_check(viewer, request.check_id)
    try:
        with db.connection() as conn:
            row = add_silence(conn, request.check_id, request.reason, author=viewer.name,
                              duration=request.duration, until=request.until, entity_id=request.entity_id,
                              starts_at=request.starts_at)
    except SilenceError as exc:
        raise FieldError(exc.field or "body", exc.message) from None
    return service.silence_json(row)


def expire(viewer: Viewer, silence_id: int) -> dict:
    """End a silence now as `viewer`; 404 when there is no such active silence they may see."""
    from loyalty_checks.silences import expire_silence

    with db.connection() as conn:
        found = store.silence_exists(conn, silence_id)
        cat, checks = visible(viewer)
        if found is None or not found["active"] or found["check_id"] not in {c.id for c in checks} \
                or not expire_silence(conn, silence_id):
            raise HTTPException(404, f"No active silence with id {silence_id}")
        row = store.silence(conn, silence_id)
    return service.silence_json(row)


@router.post("/silences", status_code=201, responses={201: {"model": Silence, "description": "The silence"},
                                                       **NOT_FOUND},
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": SilenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")}},
                 "required": True}})
async def post_silence(request: Request, viewer: Writer):
    """Add a silence; its author is the caller (an `author` in the body is ignored).

    The body is read after the permission check: a viewer gets 403 whatever they send."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise FieldError("body", "expected a JSON object with Content-Type: application/json")
    data = json_object(await read_body(request))
    silence = parse_silence(data, now())
    return json_response(await run_in_threadpool(add, viewer, silence), status=201)


def acknowledge(viewer: Viewer, check_id: str) -> dict:
    """Acknowledge a check's firing episode as `viewer` (actions.acknowledge: the lifecycle
    decides; PagerDuty hears it for a check that pages)."""
    from loyalty_checks import actions

    _, check = visible_check(viewer, check_id)
    try:
        with db.connection() as conn:
            done = actions.acknowledge(conn, check, viewer.name, "console")
    except Exception as exc:  # noqa: BLE001 - nothing was applied: say what failed
        raise HTTPException(502, f"Not acknowledged: {type(exc).__name__}: {exc}"[:500]) from None
    if done.status == actions.NOT_FIRING:
        raise HTTPException(409, done.message)
    return {"check_id": check.id, "result": done.status, "acknowledged_by": done.acknowledged_by,
            "acknowledged_at": done.acknowledged_at.isoformat() if done.acknowledged_at else None}


@router.post("/alerts/{check_id}/ack", responses={
    200: {"model": Acknowledged}, 409: {"model": Error, "description": "The check is not firing"},
    502: {"model": Error, "description": "Not acknowledged: the alert state or PagerDuty could not be reached"},
    **NOT_FOUND})
def post_ack(check_id: Annotated[str, Path(max_length=63)], viewer: Writer):
    """Acknowledge the check's firing alert: no reminders and no escalation until it resolves (the
    signed-in user is the author). Acknowledging it again changes nothing."""
    return json_response(acknowledge(viewer, check_id))


@router.delete("/silences/{silence_id}", responses={200: {"model": Silence}, **NOT_FOUND})
def delete_silence(silence_id: Annotated[int, Path(ge=1, le=2**63 - 1)], viewer: Writer):
    """End an active silence now."""
    return json_response(expire(viewer, silence_id))
