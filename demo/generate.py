"""Fill a loyalty database with a small, realistic demo platform as of a time T.

The data is made by one set-based SQL script, demo/generate.sql (read it for the story
and the incidents), with T, the scale and the incident switch as bound parameters. With
`incidents=True` (the default) the P0 and P1 checks below fire as of T, for the entities
named; with `incidents=False` no P0 or P1 check fires (the tests' "healthy platform").

  expiration_task_stale  last SUCCESS of loyalty.expire_points ~31 h before T
  google_wallet_down     the two latest Google runs failed 80 % and 70 % of their cards
  wallet_sync_failures   provider google (apple stays under 5 %)
  email_failure_rate     ~3 % of the loyalty_* e-mails of the last 24 h failed
  rate_limit_spikes      stores 3 (hostile name) and 6, over 100 429s in one minute
  P2                     low_enrollment (merchants 7 and 13), high_churn,
                         low_cohort_retention; low_redemption_rate healthy

Usage (the database must already hold include/sql/schema/loyalty.sql, or pass --schema):

    python -m demo.generate --dsn postgresql://user@host/db --t 2026-11-23T08:00:00Z
    python -m demo.generate --dsn ... --healthy --replace      # T defaults to now

No secrets are read from anywhere but the --dsn argument or LOYALTY_DEMO_DSN.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
GENERATE_SQL = HERE / "generate.sql"
SCHEMA_SQL = HERE.parent / "include" / "sql" / "schema" / "loyalty.sql"

# The tables the generator fills, children first (the order TRUNCATE and counts use).
TABLES = (
    "loyalty_wallet_sync_runs",
    "loyalty_transactions",
    "loyalty_cards",
    "loyalty_programs",
    "rate_limit_events",
    "email_logs",
    "celery_taskmeta",
    "stores",
    "merchants",
)


class NotEmptyError(RuntimeError):
    """The target database already holds platform rows and `replace` was not asked for."""


def _as_utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:  # a naive T means UTC, as everywhere in this package
        return t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc)


def generate(conn: psycopg.Connection, t: dt.datetime, scale: float = 1.0, incidents: bool = True,
             replace: bool = False) -> dict[str, int]:
    """Fill the (schema-created) database behind `conn` with the demo platform as of `t`.

    Runs in one transaction, committed on return. Refuses a database that already has
    merchants unless `replace`, which empties the platform tables first. Returns the row
    count per table.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    params = {"t": _as_utc(t), "scale": float(scale), "incidents": bool(incidents)}
    script = GENERATE_SQL.read_text(encoding="utf-8")
    with conn.transaction():
        with conn.cursor() as cur:
            if replace:
                cur.execute("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY")
            else:
                cur.execute("SELECT EXISTS (SELECT 1 FROM merchants)")
                if cur.fetchone()[0]:
                    raise NotEmptyError("the database already holds merchants; pass replace=True "
                                        "(--replace) to empty the platform tables first")
        # Client-side binding: the script is several statements sent as one batch.
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(script, params)
        with conn.cursor() as cur:
            counts = {}
            for table in TABLES:
                cur.execute(f"SELECT count(*) FROM {table}")  # names from TABLES, not input
                counts[table] = cur.fetchone()[0]
    return counts


def healthy(conn: psycopg.Connection, t: dt.datetime, scale: float = 1.0, replace: bool = False) -> dict[str, int]:
    """The same platform without incidents: no P0 or P1 check fires as of `t`."""
    return generate(conn, t, scale=scale, incidents=False, replace=replace)


def ensure_schema(conn: psycopg.Connection) -> bool:
    """Create the loyalty tables from include/sql/schema/loyalty.sql if they are missing."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('merchants') IS NOT NULL")
            if cur.fetchone()[0]:
                return False
            cur.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
    return True


def parse_time(text: str) -> dt.datetime:
    """ISO 8601, 'Z' allowed; a time without offset is UTC."""
    return _as_utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


def _connect_with_retry(dsn: str, wait: float) -> psycopg.Connection:
    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg.connect(dsn)
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("LOYALTY_DEMO_DSN"),
                    help="libpq connection string or URI of the loyalty database (env LOYALTY_DEMO_DSN)")
    ap.add_argument("--t", type=parse_time, default=None,
                    help="as-of time T, ISO 8601 (default: now, to the minute)")
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = ~3000 cards (default)")
    ap.add_argument("--healthy", action="store_true", help="no incidents: no P0/P1 check fires at T")
    ap.add_argument("--replace", action="store_true", help="empty the platform tables first")
    ap.add_argument("--schema", action="store_true",
                    help="create the tables from include/sql/schema/loyalty.sql if they are missing")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to retry connecting (default 0)")
    args = ap.parse_args(argv)
    if not args.dsn:
        ap.error("--dsn (or LOYALTY_DEMO_DSN) is required")
    t = args.t or dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)

    with _connect_with_retry(args.dsn, args.wait) as conn:
        if args.schema and ensure_schema(conn):
            print("created the loyalty tables from", SCHEMA_SQL.name)
        started = time.monotonic()
        try:
            counts = generate(conn, t, scale=args.scale, incidents=not args.healthy, replace=args.replace)
        except NotEmptyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    mode = "healthy" if args.healthy else "with incidents"
    print(f"demo platform as of {t.isoformat()} ({mode}, scale {args.scale:g}) "
          f"in {time.monotonic() - started:.1f} s:")
    for table, n in counts.items():
        print(f"  {table:26} {n:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
