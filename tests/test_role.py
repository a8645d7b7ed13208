"""The least-privilege role (include/sql/schema/monitoring_role.sql) on a real PostgreSQL:
the checks and the alert state work with it, and nothing can write to the source tables."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from loyalty_checks.catalog import INCLUDE_DIR, catalog
from loyalty_checks.measure import fetch, measure
from loyalty_checks.pipeline import run
from loyalty_checks.store import ensure_schema
from loyalty_checks.store.alerts import AlertStore, RunRef
from tests.sql.rows import T

ROLE_SQL = INCLUDE_DIR / "sql" / "schema" / "monitoring_role.sql"


@pytest.fixture
def role(pg, loyalty_db, db):
    name = f"loyalty_checks_{uuid.uuid4().hex[:8]}"
    sql = ROLE_SQL.read_text().replace("loyalty_checks", name).replace("DATABASE loyalty ", f"DATABASE {loyalty_db} ")
    db.execute(sql)
    yield name
    db.execute(f"DROP OWNED BY {name} CASCADE")
    db.execute(f"DROP ROLE {name}")


@pytest.fixture
def as_role(pg, loyalty_db, role):
    with psycopg.connect(pg.conninfo(loyalty_db) + f" user={role}", autocommit=True) as conn:
        yield conn


def test_every_check_and_the_alert_state_work_with_the_role(as_role):
    ensure_schema(as_role)
    for check in catalog().checks:
        measurement = measure(check, T, as_role)
        assert measurement.error is None, measurement.error
        run(check, measurement, AlertStore(as_role, RunRef("d", "r", T)))
    count = as_role.execute("SELECT count(*) FROM loyalty_monitoring.evaluations").fetchone()[0]
    assert count == len(catalog().checks)


@pytest.mark.parametrize("statement", [
    "INSERT INTO merchants (id, name) VALUES (1, 'x')",
    "UPDATE loyalty_cards SET is_active = false",
    "DELETE FROM email_logs",
    "TRUNCATE rate_limit_events",
    "CREATE TABLE public.sneaky (id int)",
])
def test_the_role_cannot_write_outside_its_schema(as_role, statement):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role.execute(statement)


def test_a_check_cannot_write_even_as_a_superuser(db):
    """Every check runs in a READ ONLY transaction, whatever the connection may do."""
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        fetch(db, "WITH x AS (INSERT INTO merchants (id, name) VALUES (1, 'x') RETURNING id) SELECT * FROM x",
              {}, dt.timedelta(seconds=5), "test")
    assert db.execute("SELECT count(*) FROM merchants").fetchone()[0] == 0
