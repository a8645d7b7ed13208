"""A PostgreSQL server for the demo and the tests, with no installation.

By default an embedded server from the `pgserver` wheel (PostgreSQL 16, listening on
a Unix socket in a private folder, any user). Set LOYALTY_PG_URI (for example
postgresql://postgres@127.0.0.1:5432/postgres) to use an existing server instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_SQL = ROOT / "include" / "sql" / "schema" / "loyalty.sql"


@dataclass
class PgServer:
    host: str          # a socket directory or a host name
    port: int | None
    user: str
    password: str | None
    admin_db: str
    _embedded: object | None = None

    def conninfo(self, dbname: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname=dbname or self.admin_db)

    def connect(self, dbname: str | None = None, **kw) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(dbname), **kw)

    def airflow_conn(self, dbname: str) -> str:
        """An AIRFLOW_CONN_* value (JSON) for a database of this server."""
        conn = {"conn_type": "postgres", "host": self.host, "login": self.user, "schema": dbname}
        if self.port:
            conn["port"] = self.port
        if self.password:
            conn["password"] = self.password
        return json.dumps(conn)

    def create_database(self, name: str, template: str | None = None, schema: bool = False) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if template:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)))
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if schema:
            with self.connect(name, autocommit=True) as conn:
                conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))

    def drop_database(self, name: str) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.cleanup()
            self._embedded = None


def start(data_dir: str | Path | None = None, keep: bool = False) -> PgServer:
    """The server named by LOYALTY_PG_URI, else an embedded one in `data_dir`."""
    uri = os.environ.get("LOYALTY_PG_URI")
    if uri:
        parts = urlsplit(uri)
        return PgServer(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                        user=parts.username or "postgres", password=parts.password,
                        admin_db=(parts.path or "/postgres").lstrip("/") or "postgres")
    import pgserver  # only needed for the embedded default

    # A Unix socket path must stay under ~100 bytes, so the default lives in /tmp.
    data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="loyalty-pg-"))
    server = pgserver.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    return PgServer(host=str(data_dir), port=None, user="postgres", password=None,
                    admin_db="postgres", _embedded=server)


SLACK_BOT_TOKEN, SLACK_ALERTS_CHANNEL = "xoxb-test", "C0ALERTS"  # the Web API variant of the alerts connection


def slack_web_api_conn(sink_url: str, channel: str = SLACK_ALERTS_CHANNEL, token: str = SLACK_BOT_TOKEN) -> str:
    """`slack_loyalty_alerts` as a Web API connection (type `slack`) to the sink's `/api/`."""
    return json.dumps({"conn_type": "slack", "password": token,
                       "extra": {"channel": channel, "base_url": f"{sink_url}/api/"}})


def connection_env(pg: PgServer, loyalty_db: str, sink_url: str, routing_key: str,
                   monitoring_db: str | None = None, slack_channels: tuple[str, str] = ("alerts", "reports"),
                   slack_web_api: bool = False) -> dict[str, str]:
    """AIRFLOW_CONN_* variables of checks.md: the databases on `pg`, Slack and PagerDuty at `sink_url`
    (alerts through an incoming webhook, or with `slack_web_api` through the Web API)."""
    alerts, reports = slack_channels
    return {
        "AIRFLOW_CONN_LOYALTY_DB": pg.airflow_conn(loyalty_db),
        "AIRFLOW_CONN_LOYALTY_MONITORING_DB": pg.airflow_conn(monitoring_db or loyalty_db),
        "AIRFLOW_CONN_SLACK_LOYALTY_ALERTS": slack_web_api_conn(sink_url) if slack_web_api else json.dumps(
            {"conn_type": "slackwebhook", "password": f"{sink_url}/slack/{alerts}"}),
        "AIRFLOW_CONN_SLACK_LOYALTY_REPORTS": json.dumps(
            {"conn_type": "slackwebhook", "password": f"{sink_url}/slack/{reports}"}),
        "AIRFLOW_CONN_PAGERDUTY_LOYALTY": json.dumps(
            {"conn_type": "pagerduty_events", "password": routing_key,
             "extra": {"events_api_url": f"{sink_url}/pagerduty"}}),
    }
