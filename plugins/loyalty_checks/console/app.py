"""The console's FastAPI app, mounted by the plugin at /loyalty on Airflow's api-server.

Before any routing, a middleware asks Airflow who is asking (auth.authenticate): the
API answers 401 and a page redirects to Airflow's login when nobody valid is signed in,
so no route can be reached anonymously, even one that forgot its dependency. The routes'
dependencies then check permissions. Errors: JSON {"detail", "field"} on the API, an
HTML page elsewhere; every invalid value is a 400 naming its field.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse

from loyalty_checks.console import api, auth, backtest_page, pages
from loyalty_checks.console.common import PREFIX, is_api, json_response, relative_path
from loyalty_checks.console.models import FieldError, first_error


def _error(request: Request, status: int, message: str, field: str | None = None, headers: dict | None = None):
    if is_api(request.scope):
        body = {"detail": message} | ({"field": field} if field else {})
        response = json_response(body, status=status)
    else:
        response = pages.error_page(request, status, message, field)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _to_login(request: Request) -> RedirectResponse:
    """A page without a (valid) session: to Airflow's login, and back (a form's post: to the form's page)."""
    return RedirectResponse(auth.login_url(request, PREFIX), status_code=302 if request.method in ("GET", "HEAD") else 303)


SECURITY = {"AirflowBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                              "description": "A token of POST {base}/auth/token, as Airflow's own API takes it"},
            "AirflowCookie": {"type": "apiKey", "in": "cookie", "name": "_token",
                              "description": "The Airflow UI's session cookie (writes: from this origin only)"}}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The API's OpenAPI document: only the JSON API (the pages are not in it), bearer (or the
    UI's cookie) on every path, and the errors the console really sends: 400 with the field,
    never FastAPI's 422."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                          servers=app.servers or None)
        for item in doc.get("paths", {}).values():
            for op in item.values():
                op.get("responses", {}).pop("422", None)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        doc["components"]["securitySchemes"] = SECURITY
        doc["security"] = [{name: []} for name in SECURITY]
        app.openapi_schema = doc
    return app.openapi_schema


def create_app() -> FastAPI:
    app = FastAPI(title="Loyalty alerts console", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Alerts, history and silences of the loyalty checks (shared/spec/console.md). "
                              "Times are ISO 8601 with a zone.")
    app.openapi = lambda: openapi_document(app)

    @app.middleware("http")
    async def signed_in_only(request: Request, call_next):
        try:
            await auth.authenticate(request)
        except HTTPException as exc:
            if is_api(request.scope):
                return _error(request, exc.status_code, exc.detail, headers=exc.headers)
            return _to_login(request)
        return await call_next(request)

    @app.exception_handler(auth.LoginRequired)
    async def login_required(request: Request, exc: auth.LoginRequired):
        return _to_login(request)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and the router's own (404, 405)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if (exc.status_code, message) == (404, "Not Found"):
            message = f"Nothing at {PREFIX}{relative_path(request.scope)} in the console"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed at {PREFIX}{relative_path(request.scope)}"
        return _error(request, exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        err = first_error(list(exc.errors()))
        return _error(request, 400, str(err), err.field)

    @app.exception_handler(FieldError)
    async def invalid_field(request: Request, exc: FieldError):
        return _error(request, 400, str(exc), exc.field)

    app.include_router(api.router)
    app.include_router(pages.router, include_in_schema=False)  # HTML, not the JSON API
    app.include_router(backtest_page.router, include_in_schema=False)
    return app
