"""Fill a loyalty database at production scale (scale 1.0 = the large tenant), as of T.

The rows are made inside PostgreSQL by bench/generate.sql (set-based SQL: read it for the
distributions and for what each check sees at T). This module creates the database,
runs the schema's CREATE TABLE statements, loads on two sessions at once (the
transactions on one, everything else on the other), then runs the schema's CREATE INDEX
statements, VACUUM ANALYZE and records what it generated in the database's comment
(bench.run reuses a database whose comment matches its scale, T and generator).

    python -m bench.generate --dsn postgresql://postgres@127.0.0.1:5432/postgres --scale 1.0
    python -m bench.generate --dsn ... --scale 0.01 --db my_bench --replace
    python -m bench.generate --dsn postgresql://.../empty_db --scale 0.01 --in-place

Row counts at scale s (1.0): merchants 10,000 s, stores 30,000 s, cards 2M s,
transactions ~50M s, e-mails 10M s, Celery rows 1M s, 429 events ~5M s, wallet sync
runs 200k s, with floors for tiny scales (see `targets`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty, Queue
from typing import Callable

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GENERATE_SQL = HERE / "generate.sql"
SCHEMA_SQL = ROOT / "include" / "sql" / "schema" / "loyalty.sql"
DEFAULT_T = "2026-11-23T08:00:00+00:00"   # a Monday 08:00 UTC, when the weekly digest runs
TX_PER_CHUNK = 2_500_000                  # transactions generated (and sorted in memory) per statement

TABLES = (
    "merchants", "stores", "loyalty_programs", "loyalty_cards", "loyalty_transactions",
    "email_logs", "celery_taskmeta", "loyalty_wallet_sync_runs", "rate_limit_events",
)
# Loading sessions: generous memory for the sorts, no FK triggers (the rows are consistent
# by construction; replica role needs a superuser, else the triggers run and it is slower).
SESSION_SETTINGS = {
    "synchronous_commit": "off",
    "work_mem": "512MB",
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "0",   # two sessions already keep the two cores busy
    "jit": "off",
    "TimeZone": "UTC",
}
INDEX_RE = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b[^;]*;", re.IGNORECASE | re.DOTALL)
INDEX_TABLE_RE = re.compile(r"\bON\s+(?:ONLY\s+)?([a-z_][a-z0-9_.]*)", re.IGNORECASE)


def targets(scale: float) -> dict[str, int]:
    """The row counts generate.sql aims at (exact, except transactions and 429s: about)."""
    cycles = max(100, round(100_000 * scale))
    return {
        "merchants": max(20, round(10_000 * scale)),
        "stores": max(40, round(30_000 * scale)),
        "loyalty_programs": max(20, round(10_000 * scale)),
        "loyalty_cards": max(200, round(2_000_000 * scale)),
        "loyalty_transactions": max(5000, round(50_000_000 * scale)),
        "email_logs": max(1000, round(10_000_000 * scale)),
        "celery_taskmeta": max(max(1000, round(1_000_000 * scale)), cycles + 760),
        "loyalty_wallet_sync_runs": 2 * cycles,
        "rate_limit_events": max(6000, round(5_000_000 * scale)),
    }


def scale_tag(scale: float) -> str:
    return f"{scale:g}".replace(".", "_").replace("-", "m")


def default_dbname(scale: float) -> str:
    return f"loyalty_bench_{scale_tag(scale)}"


def fingerprint() -> str:
    """Changes whenever the generator or the schema (tables or indexes) changes."""
    h = hashlib.sha256(GENERATE_SQL.read_bytes() + SCHEMA_SQL.read_bytes())
    return h.hexdigest()[:16]


def split_schema(text: str) -> tuple[str, list[str]]:
    """The schema's tables (everything but its CREATE INDEX statements) and its indexes.

    Indexes are made idempotent (IF NOT EXISTS), so they also apply to a database whose
    schema was created whole.
    """
    no_comments = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    indexes = [re.sub(r"^CREATE\s+(UNIQUE\s+)?INDEX\s+(?!IF\s+NOT\s+EXISTS)", r"CREATE \1INDEX IF NOT EXISTS ",
                      " ".join(m.group(0).split()), flags=re.IGNORECASE)
               for m in INDEX_RE.finditer(no_comments)]
    tables = INDEX_RE.sub("", no_comments)
    return tables, indexes


def index_table(statement: str) -> str:
    m = INDEX_TABLE_RE.search(statement)
    return m.group(1).split(".")[-1] if m else ""


def sections(text: str) -> dict[str, str]:
    """generate.sql's sections, by the `-- @section <name>` lines."""
    parts: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        m = re.match(r"--\s*@section\s+(\w+)\s*$", line)
        if m:
            if name:
                parts[name] = "\n".join(lines)
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name:
        parts[name] = "\n".join(lines)
    return parts


def parse_time(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t).astimezone(dt.timezone.utc)


def conninfo_for(dsn: str, dbname: str | None) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname) if dbname else dsn


def _session(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True, application_name="bench.generate")
    for name, value in SESSION_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    if conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        conn.execute("SET session_replication_role = replica")
    return conn


def create_database(admin_dsn: str, dbname: str, replace: bool) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists and not replace:
            raise SystemExit(f"database {dbname!r} exists: pass --replace to drop it first")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def prepare_tables(conn: psycopg.Connection, tables_sql: str, unlogged: bool) -> bool:
    """Create the tables unless present; refuse a database that holds platform rows.

    With `unlogged`, tables created here are UNLOGGED during the load (no WAL: the server's
    max_wal_size would otherwise force a checkpoint every GB). Returns True when the
    tables were created here (indexes come after the load).
    """
    present = conn.execute("SELECT to_regclass('merchants') IS NOT NULL").fetchone()[0]
    if not present:
        if unlogged:
            tables_sql = re.sub(r"\bCREATE\s+TABLE\b", "CREATE UNLOGGED TABLE", tables_sql, flags=re.IGNORECASE)
        conn.execute(tables_sql)
        return True
    for table in TABLES:
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))).fetchone()[0]:
            raise SystemExit(f"table {table} is not empty: the generator needs an empty database")
    return False


class _Steps:
    """Runs named steps on one session, timing each; stops when another worker failed."""

    def __init__(self, dsn: str, log: Callable[[str], None], failed: threading.Event):
        self.dsn, self.log, self.failed = dsn, log, failed
        self.timings: dict[str, float] = {}

    def run(self, conn: psycopg.Connection, name: str, statement: str, params: dict | None = None) -> None:
        if self.failed.is_set():
            raise RuntimeError("stopped: the other loading session failed")
        started = time.monotonic()
        try:
            if params is None:
                conn.execute(statement)
            else:
                with psycopg.ClientCursor(conn) as cur:   # several statements, one batch
                    cur.execute(statement, params)
        except Exception:
            self.failed.set()
            raise
        self.timings[name] = time.monotonic() - started
        self.log(f"  {name:<44} {self.timings[name]:7.1f} s")


def generate(dsn: str, scale: float = 1.0, t: dt.datetime | None = None, dbname: str | None = None,
             in_place: bool = False, replace: bool = False, logged: bool = False,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    """Generate the platform; returns {'database', 'counts', 'seconds', 'timings', ...}.

    `dsn` names the server (any database on it) unless `in_place`, when its own (empty)
    database is filled. Tables created here are UNLOGGED (reads, plans and timings are
    those of logged tables; a crash of the server empties them) unless `logged`, which
    converts them after the load. The database's comment records scale, T, fingerprint.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    t = parse_time(DEFAULT_T) if t is None else t.astimezone(dt.timezone.utc)
    started = time.monotonic()
    if in_place:
        target = dsn
        dbname = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    else:
        dbname = dbname or default_dbname(scale)
        create_database(dsn, dbname, replace)
        target = conninfo_for(dsn, dbname)
    chunks = max(1, math.ceil(targets(scale)["loyalty_transactions"] / TX_PER_CHUNK))
    params = {"t": t, "scale": float(scale), "chunks": chunks, "chunk": 0}
    parts = sections(GENERATE_SQL.read_text(encoding="utf-8"))
    tables_sql, index_sqls = split_schema(SCHEMA_SQL.read_text(encoding="utf-8"))
    tx_indexes = [s for s in index_sqls if index_table(s) == "loyalty_transactions"]
    other_indexes = [s for s in index_sqls if s not in tx_indexes]
    others = [table for table in TABLES if table != "loyalty_transactions"]
    failed = threading.Event()
    a, b = _Steps(target, log, failed), _Steps(target, log, failed)
    log(f"generating {dbname} at scale {scale:g} as of {t.isoformat()} ({chunks} transaction chunks)")

    def vacuum(steps: _Steps, conn: psycopg.Connection, tables) -> None:
        for table in tables:
            steps.run(conn, f"vacuum analyze {table}", sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))

    with _session(target) as ca, _session(target) as cb:
        created = prepare_tables(ca, tables_sql, unlogged=True)
        convert = created and logged
        a.run(ca, "setup: merchants, stores, programs, cards", parts["setup"], params)

        def load_transactions():
            for chunk in range(chunks):
                a.run(ca, f"transactions chunk {chunk + 1}/{chunks}", parts["transactions"], {**params, "chunk": chunk})
            if not convert:   # before its indexes: the cheapest moment to set hint bits and the visibility map
                vacuum(a, ca, ["loyalty_transactions"])

        def load_others():
            for name in ("emails", "celery", "sync_runs", "rate_limits"):
                b.run(cb, name, parts[name], params)
            for statement in other_indexes:
                b.run(cb, "index " + _index_name(statement), statement)
            if not convert:
                vacuum(b, cb, others)

        _parallel([load_transactions, load_others])

        # The transactions' indexes, shared by both sessions.
        queue: Queue[str] = Queue()
        for statement in tx_indexes:
            queue.put(statement)

        def build(steps: _Steps, conn: psycopg.Connection):
            def work():
                while True:
                    try:
                        statement = queue.get_nowait()
                    except Empty:
                        return
                    steps.run(conn, "index " + _index_name(statement), statement)
            return work

        _parallel([build(a, ca), build(b, cb)])
        a.run(ca, "finish: sequences", parts["finish"], params)

        if convert:
            # A logged table may not reference an unlogged one: parents first.
            for table in ("merchants", "stores", "loyalty_programs", "loyalty_cards"):
                a.run(ca, f"set logged {table}", sql.SQL("ALTER TABLE {} SET LOGGED").format(sql.Identifier(table)))
            rest = ["email_logs", "celery_taskmeta", "loyalty_wallet_sync_runs", "rate_limit_events"]

            def log_transactions():
                a.run(ca, "set logged loyalty_transactions", "ALTER TABLE loyalty_transactions SET LOGGED")
                vacuum(a, ca, ["loyalty_transactions"])

            def log_rest():
                for table in rest:
                    b.run(cb, f"set logged {table}", sql.SQL("ALTER TABLE {} SET LOGGED").format(sql.Identifier(table)))
                vacuum(b, cb, others)

            _parallel([log_transactions, log_rest])

        counts = {table: ca.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
                  for table in TABLES}
        size = ca.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        unlogged = ca.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 'u' AND relkind = 'r'"
                              " AND relnamespace = 'public'::regnamespace").fetchone()[0] > 0
        seconds = time.monotonic() - started
        info = {"scale": float(scale), "t": t.isoformat(), "fingerprint": fingerprint(), "counts": counts,
                "seconds": round(seconds, 1), "bytes": size, "unlogged": unlogged}
        ca.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(dbname), sql.Literal(json.dumps({"bench": info}))))
    log(f"generated {dbname} in {seconds:.0f} s ({size / 2**30:.1f} GiB)")
    return {"database": dbname, **info, "timings": {**a.timings, **b.timings}}


def _index_name(statement: str) -> str:
    m = re.search(r"INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", statement, re.IGNORECASE)
    return m.group(1) if m else statement[:40]


def _parallel(functions: list[Callable[[], None]]) -> None:
    with ThreadPoolExecutor(max_workers=len(functions)) as pool:
        futures = [pool.submit(f) for f in functions]
    errors = [f.exception() for f in futures if f.exception() is not None]
    # the first real error, not the "stopped" of the session that noticed it
    errors.sort(key=lambda e: str(e).startswith("stopped:"))
    if errors:
        raise errors[0]


def stored_info(dsn: str, dbname: str) -> dict | None:
    """What generate() recorded in the database's comment, or None."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (dbname,)).fetchone()
    if not row or not row[0]:
        return None
    try:
        return json.loads(row[0]).get("bench")
    except (ValueError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True,
                    help="libpq URI or connection string of the server (any database), or of the database with --in-place")
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = the large tenant (default)")
    ap.add_argument("--t", type=parse_time, default=parse_time(DEFAULT_T), help=f"as-of time T (default {DEFAULT_T})")
    ap.add_argument("--db", help="name of the database to create (default loyalty_bench_<scale>)")
    ap.add_argument("--replace", action="store_true", help="drop that database first if it exists")
    ap.add_argument("--in-place", action="store_true", help="fill the (empty) database named by --dsn instead")
    ap.add_argument("--logged", action="store_true",
                    help="convert the tables to LOGGED after the load (default: they stay UNLOGGED)")
    args = ap.parse_args(argv)
    result = generate(args.dsn, args.scale, args.t, dbname=args.db, in_place=args.in_place, replace=args.replace,
                      logged=args.logged)
    expected = targets(args.scale)
    print(f"database {result['database']}: scale {args.scale:g}, T {result['t']}, {result['seconds']:.0f} s, "
          f"{result['bytes'] / 2**30:.2f} GiB, {'UNLOGGED' if result['unlogged'] else 'logged'} tables")
    for table, n in result["counts"].items():
        print(f"  {table:26} {n:>12,}  (target {expected[table]:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
