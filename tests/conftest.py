"""Test setup: Airflow on a private AIRFLOW_HOME with SQLite metadata, and a real
PostgreSQL (embedded by default, or the server named by LOYALTY_PG_URI)."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: set it before any import.
_home = Path(tempfile.mkdtemp(prefix="loyalty-airflow-"))
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

TEMPLATE_DB = "loyalty_test_template"


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
