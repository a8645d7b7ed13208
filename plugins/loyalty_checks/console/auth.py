"""Who is asking, and may they? Every console route depends on one of the functions here.

A plugin's FastAPI app is not protected by Airflow: the user is read the way Airflow's
own routes read it (`get_user`: an `Authorization: Bearer` token, else the UI's `_token`
cookie) and every decision is the auth manager's, obtained with `get_auth_manager()`
(in a mounted sub-app `request.app` is the sub-app, not Airflow's).

- reading needs GET on the loyalty DAGs (a user sees the checks of the DAGs they may read);
- adding or expiring a silence, or running a backtest, needs the right to trigger the
  `loyalty_silences` DAG (POST on its runs; simple auth manager: role `user` or above);
- a state-changing request authenticated by the cookie must come from the console's own
  origin (Origin or Referer), and a form must carry the CSRF token of its page.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import HTTPException, Request

SILENCES_DAG = "loyalty_silences"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600  # seconds a form stays valid
_fallback_secret = secrets.token_bytes(32)


class LoginRequired(Exception):
    """A page was asked for without a valid session: redirect to Airflow's login."""

    def __init__(self, request: Request):
        super().__init__("login required")
        self.request = request


@dataclass(frozen=True)
class Viewer:
    """The signed-in user and what the console lets them do."""
    user: Any
    name: str
    dag_ids: frozenset[str]   # the loyalty DAGs they may read
    can_write: bool           # may add and expire silences, run backtests
    by_cookie: bool           # authenticated by the UI's cookie (CSRF rules apply)


def loyalty_dag_ids() -> list[str]:
    from loyalty_checks.catalog import catalog

    return catalog().dag_ids  # shards included


async def authenticate(request: Request) -> tuple[Any, bool]:
    """(user, by_cookie); raises HTTPException(401) when nobody valid is signed in.

    Called once per request by the app's middleware, before any routing or validation;
    the result is kept on the request for the route's permission dependency.
    """
    cached = getattr(request.state, "loyalty_user", None)
    if cached is not None:
        return cached
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        raise HTTPException(401, "Not authenticated: sign in to Airflow, or send an Authorization: Bearer token",
                            headers={"WWW-Authenticate": "Bearer"}) from exc
    request.state.loyalty_user = (user, credentials is None)
    return request.state.loyalty_user


def _permissions(user: Any, by_cookie: bool) -> Viewer:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = get_auth_manager()
    readable = manager.filter_authorized_dag_ids(dag_ids=set(loyalty_dag_ids()), user=user, method="GET")
    can_write = manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                          details=DagDetails(id=SILENCES_DAG), user=user)
    return Viewer(user=user, name=str(user.get_name()), dag_ids=frozenset(readable), can_write=bool(can_write),
                  by_cookie=by_cookie)


def _require_read(viewer: Viewer) -> Viewer:
    if not viewer.dag_ids:
        raise HTTPException(403, "Forbidden: reading the loyalty alerts needs read access to the loyalty DAGs")
    return viewer


async def api_reader(request: Request) -> Viewer:
    """An API caller who may read (401 / 403 otherwise)."""
    return _require_read(_permissions(*await authenticate(request)))


async def api_writer(request: Request) -> Viewer:
    """An API caller who may change silences, from the console's origin when using the cookie."""
    viewer = await api_reader(request)
    require_write(viewer)
    if viewer.by_cookie:
        check_origin(request)
    return viewer


async def page_reader(request: Request) -> Viewer:
    """A page visitor who may read; without a session, a redirect to Airflow's login."""
    try:
        user, by_cookie = await authenticate(request)
    except HTTPException:
        raise LoginRequired(request) from None
    return _require_read(_permissions(user, by_cookie))


def require_write(viewer: Viewer) -> None:
    if not viewer.can_write:
        raise HTTPException(403, f"Forbidden: {viewer.name} may not trigger the {SILENCES_DAG} DAG, "
                                 "which adding or expiring a silence and running a backtest need")


# ---------------------------------------------------------------- cross-site requests

def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    try:
        port = parts.port or default
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def allowed_origins(request: Request) -> set[str]:
    """The console's own origin: the one the request was sent to, and `[api] base_url`'s."""
    from airflow.configuration import conf

    found = {_origin(str(request.base_url))}
    base_url = conf.get("api", "base_url", fallback="") or ""
    if base_url:
        found.add(_origin(base_url))
    return {o for o in found if o}


def check_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site (403)."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null":
        raise HTTPException(403, "Forbidden: cross-site request check failed (no Origin or Referer header)")
    if _origin(sent) not in allowed_origins(request):
        raise HTTPException(403, "Forbidden: cross-site request check failed (Origin is not this Airflow)")


def _secret() -> bytes:
    from airflow.configuration import conf

    key = conf.get("api", "secret_key", fallback="") or ""
    return key.encode() if key else _fallback_secret


def csrf_token(viewer: Viewer, now: float | None = None) -> str:
    """A token for the forms of a page: the user and a time, signed with `[api] secret_key`."""
    stamp = str(int(now if now is not None else time.time()))
    mac = hmac.new(_secret(), f"loyalty-console|{viewer.name}|{stamp}".encode(), hashlib.sha256).hexdigest()
    return f"{stamp}.{mac}"


def check_csrf(viewer: Viewer, request: Request, token: str | None) -> None:
    """A form post: from this origin and with a valid token of this user's (403 otherwise)."""
    check_origin(request)
    stamp, _, _mac = (token or "").partition(".")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > CSRF_MAX_AGE \
            or not hmac.compare_digest(csrf_token(viewer, int(stamp)), token or ""):
        raise HTTPException(403, "Forbidden: the form's CSRF token is missing, invalid or expired; reload the page")


def _inside(target: str, console: str) -> bool:
    """Is `target` (a path and query) a page of the console, as Airflow's login will read it
    (decoded, dot segments resolved)? Anything else is not a `next` that login accepts."""
    path = unquote(target.partition("?")[0]).replace("\\", "/")
    if not path.startswith("/") or path.startswith("//") or any(ord(c) < 32 for c in path):
        return False
    normal = posixpath.normpath(path)
    return normal == console.rstrip("/") or normal.startswith(console)


def login_url(request: Request, prefix: str) -> str:
    """Airflow's login, coming back to this page: {base}/api/v2/auth/login?next=<this page's path>.

    A form posted without a session comes back to the page the form was on (its Referer,
    when from this origin): after signing in the browser GETs `next`, which a post-only
    path cannot answer. `next` is always a path inside the console, never a host taken
    from the request's Host header (no open redirect), else the console's first page."""
    base = request.scope.get("root_path", "").removesuffix(prefix)
    console = f"{base}{prefix}/"
    if request.method in ("GET", "HEAD"):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        same_origin = _origin(referer.geturl()) in allowed_origins(request)
        here = referer.path + (f"?{referer.query}" if referer.query else "") if same_origin else console
    if not _inside(here, console):
        here = console
    return f"{base}/api/v2/auth/login?next={quote(here, safe='')}"
