"""The console's FastAPI app, mounted by the plugin at /loyalty on Airflow's api-server.

Before any routing, a middleware asks Airflow who is asking (auth.authenticate): the
API answers 401 and a page redirects to Airflow's login when nobody valid is signed in,
so no route can be reached anonymously, even one that forgot its dependency. The routes'
dependencies then check permissions. Errors: JSON {"detail", "field"} on the API, an
HTML page elsewhere; every invalid value is a 400 naming its field.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import RedirectResponse

from loyalty_checks.console import api, auth, backtest_page, pages
from loyalty_checks.console.common import PREFIX, is_api, json_response
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


def create_app() -> FastAPI:
    app = FastAPI(title="Loyalty alerts console", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  description="Alerts, history and silences of the loyalty checks (shared/spec/console.md).")

    @app.middleware("http")
    async def signed_in_only(request: Request, call_next):
        try:
            await auth.authenticate(request)
        except HTTPException as exc:
            if is_api(request.scope):
                return _error(request, exc.status_code, exc.detail, headers=exc.headers)
            return RedirectResponse(auth.login_url(request, PREFIX), status_code=302)
        return await call_next(request)

    @app.exception_handler(auth.LoginRequired)
    async def login_required(request: Request, exc: auth.LoginRequired):
        return RedirectResponse(auth.login_url(request, PREFIX), status_code=302)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        err = first_error(list(exc.errors()))
        return _error(request, 400, str(err), err.field)

    @app.exception_handler(FieldError)
    async def invalid_field(request: Request, exc: FieldError):
        return _error(request, 400, str(exc), exc.field)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(backtest_page.router)
    return app
