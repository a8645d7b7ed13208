"""A root middleware of the api-server: {base}/loyalty (no slash) redirects to {base}/loyalty/.

Without it the path falls through to the Airflow UI's catch-all route (the app is mounted
at /loyalty/...), and the console's relative links need the slash. One string
comparison per request; everything else passes through untouched.
"""

from __future__ import annotations

from starlette._utils import get_route_path
from starlette.responses import RedirectResponse

PREFIX = "/loyalty"


class ConsoleSlashRedirect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and get_route_path(scope) == PREFIX:
            query = scope.get("query_string", b"").decode("latin-1")
            target = f"{scope.get('root_path', '')}{PREFIX}/" + (f"?{query}" if query else "")
            await RedirectResponse(target, status_code=307)(scope, receive, send)
            return
        await self.app(scope, receive, send)
