"""Test setup: Airflow on a private AIRFLOW_HOME with SQLite metadata, and a real
PostgreSQL (embedded by default, or the server named by LOYALTY_PG_URI)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: set it before any import.
_home = Path(tempfile.mkdtemp(prefix="loyalty-airflow-"))
atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ.update({
    "AIRFLOW_HOME": str(_home),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home}/airflow.db",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
})
for p in (str(ROOT / "plugins"), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import pytest  # noqa: E402

from demo.embedded_pg import PgServer, start  # noqa: E402

# Unique per session: several test sessions may share one server (LOYALTY_PG_URI).
TEMPLATE_DB = f"loyalty_tmpl_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def pg() -> PgServer:
    """One PostgreSQL server for the session, with a template database holding the schema."""
    server = start()
    server.create_database(TEMPLATE_DB, schema=True)
    yield server
    server.drop_database(TEMPLATE_DB)
    server.stop()


@pytest.fixture
def loyalty_db(pg):
    """A fresh database created from include/sql/schema/loyalty.sql; yields its name."""
    name = f"loyalty_t_{uuid.uuid4().hex[:10]}"
    pg.create_database(name, template=TEMPLATE_DB)
    yield name
    pg.drop_database(name)


@pytest.fixture
def db(pg, loyalty_db):
    """An autocommit psycopg connection to a fresh loyalty database."""
    with pg.connect(loyalty_db, autocommit=True) as conn:
        yield conn


# ---------------------------------------------------------------- Airflow end to end

@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata database (SQLite) for dag.test()."""
    import subprocess

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy())


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def sink():
    """A local HTTP server standing in for Slack and PagerDuty."""
    from demo.capture_server import CaptureServer

    server = CaptureServer().start()
    yield server
    server.stop()


ROUTING_KEY = "test-routing-key-0123456789"


def connection_env(pg: PgServer, loyalty_db: str, sink_url: str, monitoring_db: str | None = None,
                   slack_web_api: bool = False) -> dict:
    """AIRFLOW_CONN_* variables of checks.md pointing at test servers (Slack alerts through
    the Web API with `slack_web_api`, else the incoming webhook)."""
    from demo.embedded_pg import connection_env as env

    return env(pg, loyalty_db, sink_url, ROUTING_KEY, monitoring_db, slack_web_api=slack_web_api)


@pytest.fixture
def airflow_conns(pg, loyalty_db, sink, monkeypatch):
    """Connections of checks.md as environment variables, for this test's database and sink."""
    for key, value in connection_env(pg, loyalty_db, sink.url).items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def slack_web_api(airflow_conns, sink, monkeypatch):
    """`slack_loyalty_alerts` through Slack's Web API (type `slack`, bot token, channel
    C0ALERTS) at the sink's `/api/`, instead of the default incoming webhook."""
    from demo.embedded_pg import slack_web_api_conn

    monkeypatch.setenv("AIRFLOW_CONN_SLACK_LOYALTY_ALERTS", slack_web_api_conn(sink.url))


@pytest.fixture
def run_dag(dagbag, airflow_conns):
    """run_dag(dag_id, T) -> (dag run, {task_id: state}), executing the DAG with dag.test()."""
    from airflow.settings import Session
    from sqlalchemy import text

    with Session() as session:  # what earlier tests' fail-open tasks sent (their XCom), across dates
        session.execute(text("DELETE FROM xcom WHERE key = 'sent_while_blind'"))
        session.commit()

    bags = {}

    def current_bag():
        """The session's DagBag, or one parsed for the catalog a test points at: the
        factory gives each task its Check when the DAG file is parsed, as a worker does."""
        from loyalty_checks.catalog import DEFAULT_CATALOG, catalog_path

        path = catalog_path()
        if path == DEFAULT_CATALOG:
            return dagbag
        key = (str(path), path.stat().st_mtime_ns)
        if key not in bags:
            from airflow.dag_processing.dagbag import DagBag

            bags[key] = DagBag(dag_folder=str(ROOT / "dags"))
            assert bags[key].import_errors == {}
        return bags[key]

    def run(dag_id: str, t):
        dag = current_bag().get_dag(dag_id)
        retries = {task.task_id: task.retries for task in dag.tasks}
        for task in dag.tasks:  # dag.test() waits out retry delays in real time
            task.retries = 0
        try:
            dr = dag.test(logical_date=t)
        finally:  # the session's DagBag is shared: later tests see the DAG as parsed
            for task in dag.tasks:
                task.retries = retries[task.task_id]
        return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}

    return run
