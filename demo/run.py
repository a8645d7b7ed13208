"""`make demo`: run the three check DAGs through Airflow on a demo platform.

1. starts an embedded PostgreSQL (or uses LOYALTY_PG_URI) with two databases: the demo
   loyalty platform as of T (with a few real incidents) and the alert state;
2. starts a local capture server standing in for Slack and PagerDuty;
3. runs `airflow dags test` for loyalty_p0_checks at T, 5 minutes later (a still-firing
   alert stays quiet) and 10 minutes later after the expiration task succeeded again (it
   resolves), then loyalty_p1_checks and loyalty_p2_checks;
4. prints every notification as Slack and PagerDuty would have received it.

Everything lives under .demo/ (Airflow home with SQLite, logs, notifications.jsonl).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from demo import embedded_pg  # noqa: E402
from demo.capture_server import CaptureServer  # noqa: E402
from demo.render import render  # noqa: E402

DEMO_DIR = Path(os.environ.get("LOYALTY_DEMO_DIR") or ROOT / ".demo")
DEFAULT_T = "2026-11-23T08:00:00+00:00"  # a Monday 08:00 UTC, when the weekly digest runs
LOYALTY_DB, MONITORING_DB = "loyalty_demo", "loyalty_monitoring_demo"
ROUTING_KEY = "demo-routing-key"


def pg_data_dir() -> Path:
    """Inside .demo when the Unix socket path stays short enough, else under /tmp."""
    path = DEMO_DIR / "pg"
    if len(str(path)) > 80:
        import hashlib
        path = Path("/tmp") / f"loyalty-demo-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
    return path


def airflow_env(pg: embedded_pg.PgServer, sink_url: str, home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        # `airflow standalone` starts its components as `airflow ...`: the venv's must be found.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        **embedded_pg.connection_env(pg, LOYALTY_DB, sink_url, ROUTING_KEY, MONITORING_DB,
                                     slack_channels=("loyalty-alerts", "loyalty-reports")),
    }
    return env


def prepare_databases(pg: embedded_pg.PgServer, t: dt.datetime, incidents: bool) -> dict[str, int]:
    from demo.generate import generate

    pg.create_database(LOYALTY_DB, schema=True)
    pg.create_database(MONITORING_DB)
    with pg.connect(LOYALTY_DB) as conn:
        return generate(conn, t, incidents=incidents)


def expiration_task_succeeds(pg: embedded_pg.PgServer, at: dt.datetime) -> None:
    """The point expiration task runs again: P0 expiration_task_stale will resolve."""
    with pg.connect(LOYALTY_DB) as conn:
        conn.execute(
            "INSERT INTO celery_taskmeta (task_id, status, date_done, name)"
            " VALUES ('demo-recovery', 'SUCCESS', %s, 'loyalty.expire_points')",
            (at.astimezone(dt.timezone.utc).replace(tzinfo=None),))


def migrate(env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       stdout=out, stderr=subprocess.STDOUT)


def dags_test(dag_id: str, t: dt.datetime, env: dict[str, str], log_dir: Path) -> str:
    """`airflow dags test <dag_id> <T>`; returns the run's final state from its log."""
    log = log_dir / f"{dag_id}-{t:%Y%m%dT%H%M}.log"
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "airflow", "dags", "test", dag_id, t.isoformat()],
                       env=env, stdout=out, stderr=subprocess.STDOUT)
    found = re.findall(r"DagRun Finished: .*?state=(\w+)", log.read_text(errors="replace"))
    return found[-1] if found else f"unknown (see {log.relative_to(ROOT)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.splitlines()[0])
    ap.add_argument("--t", default=DEFAULT_T, help=f"evaluation time T (default {DEFAULT_T})")
    ap.add_argument("--healthy", action="store_true", help="a platform without incidents")
    args = ap.parse_args(argv)
    t = dt.datetime.fromisoformat(args.t.replace("Z", "+00:00")).astimezone(dt.timezone.utc)

    DEMO_DIR.mkdir(exist_ok=True)
    log_dir = DEMO_DIR / "logs"
    log_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    print(f"Loyalty checks demo, T = {t.isoformat()}")
    pg = embedded_pg.start(pg_data_dir(), keep=True)
    notifications = DEMO_DIR / "notifications.jsonl"
    notifications.unlink(missing_ok=True)
    sink = CaptureServer(log_file=notifications).start()
    try:
        counts = prepare_databases(pg, t, incidents=not args.healthy)
        print("Demo platform: " + ", ".join(f"{n:,} {table}" for table, n in counts.items()))
        env = airflow_env(pg, sink.url, DEMO_DIR / "airflow")
        migrate(env, log_dir / "airflow-db-migrate.log")
        minutes = dt.timedelta(minutes=1)
        runs = [  # (DAG, T, what happened before the run)
            ("loyalty_p0_checks", t, None),
            ("loyalty_p0_checks", t + 5 * minutes, "5 minutes later, nothing changed"),
            ("loyalty_p0_checks", t + 10 * minutes,
             "loyalty.expire_points succeeded again at T+7 min (a row added to celery_taskmeta)"),
            ("loyalty_p1_checks", t, None),
            ("loyalty_p2_checks", t, None),
        ]
        for dag_id, run_t, story in runs:
            if story:
                print(f"\n--- {story}")
            if "succeeded again" in (story or ""):
                expiration_task_succeeds(pg, run_t - 3 * minutes)
            state = dags_test(dag_id, run_t, env, log_dir)
            sent = sink.take()
            print(f"\n=== airflow dags test {dag_id} {run_t.isoformat()} -> run {state},"
                  f" {len(sent)} notification(s)")
            if not sent:
                print("    (nothing sent: no alert changed state)")
            for request in sent:
                print(render(request))
    finally:
        sink.stop()
        pg.stop()
    print(f"\nDone in {time.monotonic() - started:.0f} s. Logs: {log_dir}, raw notifications:"
          f" {notifications}. Open the Airflow UI on this demo with `make demo-ui`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
