"""Small row builders for the SQL scenario tests: one readable line per source row.

Every builder takes the test's connection (autocommit) and keyword columns named as in
include/sql/schema/loyalty.sql; each returns the new row's id.
"""

from __future__ import annotations

import datetime as dt
import uuid

from psycopg import sql

UTC = dt.timezone.utc
# A fixed "as of" time: Monday 2026-11-23 08:00 UTC, when the weekly P2 DAG runs.
T = dt.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
S = dt.timedelta(seconds=1)
MIN = dt.timedelta(minutes=1)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


def insert(db, table: str, **cols) -> int:
    """INSERT one row into `table` and return its id."""
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join([sql.Placeholder()] * len(cols)),
    )
    return db.execute(query, list(cols.values())).fetchone()[0]


def merchant(db, id: int, name: str | None = None, **cols) -> int:
    return insert(db, "merchants", id=id, name=name or f"Merchant {id}", **cols)


def store(db, id: int, merchant_id: int, name: str | None = None, **cols) -> int:
    return insert(db, "stores", id=id, merchant_id=merchant_id, name=name or f"Store {id}", **cols)


def program(db, id: int, merchant_id: int, program_type: str = "points", is_active: bool = True,
            created_at: dt.datetime = T - 365 * D, **cols) -> int:
    if program_type == "stamps":
        cols.setdefault("stamps_target", 10)
    return insert(db, "loyalty_programs", id=id, merchant_id=merchant_id, program_type=program_type,
                  is_active=is_active, created_at=created_at, **cols)


def card(db, id: int, program_id: int, merchant_id: int, enrolled_at: dt.datetime,
         is_active: bool = True, **cols) -> int:
    cols.setdefault("customer_email", f"customer{id}@example.com")
    return insert(db, "loyalty_cards", id=id, program_id=program_id, merchant_id=merchant_id,
                  enrolled_at=enrolled_at, is_active=is_active, **cols)


def tx(db, card_id: int, merchant_id: int, kind: str, created_at: dt.datetime,
       points: int = 0, stamps: int = 0, **cols) -> int:
    return insert(db, "loyalty_transactions", card_id=card_id, merchant_id=merchant_id, kind=kind,
                  created_at=created_at, points=points, stamps=stamps, **cols)


def emails(db, n: int, status: str, created_at: dt.datetime,
           template_code: str = "loyalty_welcome", recipient: str = "customer@example.com") -> None:
    """`n` identical e-mails."""
    db.execute(
        "INSERT INTO email_logs (template_code, recipient, status, created_at)"
        " SELECT %s, %s, %s, %s FROM generate_series(1, %s)",
        (template_code, recipient, status, created_at, n))


def celery(db, date_done: dt.datetime | None, status: str = "SUCCESS",
           name: str = "loyalty.expire_points", **cols) -> int:
    """A Celery result row; date_done is given aware and stored as naive UTC, as Celery does."""
    if date_done is not None and date_done.tzinfo is not None:
        date_done = date_done.astimezone(UTC).replace(tzinfo=None)
    return insert(db, "celery_taskmeta", task_id=str(uuid.uuid4()), status=status,
                  date_done=date_done, name=name, **cols)


def sync_run(db, provider: str, finished_at: dt.datetime | None, cards_total: int,
             failed_card_ids: list[int] = (), cards_failed: int | None = None, **cols) -> int:
    started = (finished_at or T) - 5 * MIN
    return insert(db, "loyalty_wallet_sync_runs", provider=provider, started_at=started,
                  finished_at=finished_at, cards_total=cards_total,
                  cards_failed=len(failed_card_ids) if cards_failed is None else cards_failed,
                  failed_card_ids=list(failed_card_ids), **cols)


def rate_limited(db, store_id: int | None, occurred_at: dt.datetime, n: int = 1) -> None:
    """`n` HTTP 429 events at the same instant."""
    db.execute(
        "INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
        " SELECT %s, %s, 'POST', '/api/loyalty/stamps' FROM generate_series(1, %s)",
        (store_id, occurred_at, n))
