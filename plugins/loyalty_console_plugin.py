"""The loyalty alert console inside the Airflow UI (shared/spec/console.md).

Registers on the api-server a FastAPI app at /loyalty (pages and the JSON API, code in
loyalty_checks/console/), the nav entry "Loyalty alerts" shown in the UI's iframe at
/plugin/loyalty-alerts, and an "Alerts" tab on every DAG (the console filtered to that
DAG's checks). Importing this file builds the app object only: no database, no
connection, no configuration read (those happen per request).
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

try:
    from loyalty_checks.console.app import create_app
except ModuleNotFoundError:  # plugins/ is not on sys.path (not Airflow's plugins folder)
    sys.path.append(str(Path(__file__).resolve().parent))
    from loyalty_checks.console.app import create_app
from loyalty_checks.console.slash import ConsoleSlashRedirect  # noqa: E402

console_app = create_app()

# A bell (Lucide's, ISC licence), inline so that no route serves it unauthenticated.
_BELL = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none'"
         " stroke='{}' stroke-width='2' stroke-linecap='round' stroke-linejoin='round'%3E%3Cpath"
         " d='M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9'/%3E%3Cpath d='M10.3 21a1.94 1.94 0 0 0 3.4 0'/%3E%3C/svg%3E")


class LoyaltyConsolePlugin(AirflowPlugin):
    name = "loyalty_console"
    fastapi_apps = [{"app": console_app, "url_prefix": "/loyalty", "name": "Loyalty alerts console"}]
    fastapi_root_middlewares = [{"middleware": ConsoleSlashRedirect, "args": [], "kwargs": {},
                                 "name": "Loyalty alerts console: /loyalty -> /loyalty/"}]
    external_views = [
        {"name": "Loyalty alerts", "href": "loyalty/", "url_route": "loyalty-alerts", "destination": "nav",
         "nav_top_level": True, "icon": _BELL.format("%23334155"), "icon_dark_mode": _BELL.format("%23e2e8f0")},
        {"name": "Alerts", "href": "loyalty/?dag_id={DAG_ID}", "url_route": "loyalty-dag-alerts",
         "destination": "dag", "icon": _BELL.format("%23334155"), "icon_dark_mode": _BELL.format("%23e2e8f0")},
    ]
