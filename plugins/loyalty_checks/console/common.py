"""Shared by the API and the pages: the catalog as a viewer sees it, JSON and HTML responses."""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from starlette.responses import HTMLResponse, Response

from loyalty_checks.catalog import Catalog, Check, catalog
from loyalty_checks.console import service
from loyalty_checks.console.auth import Viewer

PREFIX = "/loyalty"
TEMPLATES = Path(__file__).with_name("templates")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def visible(viewer: Viewer, cat: Catalog | None = None) -> tuple[Catalog, list[Check]]:
    """The catalog and the checks whose DAG the viewer may read."""
    cat = cat or catalog()
    return cat, service.visible_checks(cat, viewer.dag_ids)


def visible_check(viewer: Viewer, check_id: str) -> tuple[Catalog, Check]:
    """One check the viewer may read: 404 if the catalog has none of that id, 403 if not theirs."""
    cat = catalog()
    try:
        check = cat.check(check_id)
    except KeyError:
        raise HTTPException(404, f"No check {check_id!r} in the catalog") from None
    if service.dag_of(cat, check) not in viewer.dag_ids:
        raise HTTPException(403, f"Forbidden: {viewer.name} may not read the DAG of {check_id!r}")
    return cat, check


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, allow_nan=False, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers={"Cache-Control": "no-store"})


def relative_path(scope: dict[str, Any]) -> str:
    """The path inside the console: '/api/alerts' for {base}/loyalty/api/alerts."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def is_api(scope: dict[str, Any]) -> bool:
    return relative_path(scope).startswith("/api/")


@lru_cache(maxsize=1)
def environment():
    """Jinja2 with autoescaping of every template (all of them are HTML)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from loyalty_checks.console import formatting

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(formatting.FILTERS)
    return env


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers={
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        # Only what the pages need: inline styles and the one inline script, nothing from elsewhere.
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self' 'unsafe-inline'; form-action 'self'; base-uri 'self'; "
                                   "frame-ancestors 'self'",
        "Referrer-Policy": "same-origin"})
