"""`make demo-ui`: the Airflow UI on the demo platform, with the check DAGs scheduled and
the alert console showing something at once.

1. generates the demo platform as of now (its incidents fire now) and starts the capture
   server on 127.0.0.1:8025, printing each notification as it arrives;
2. gives the console a history: `airflow dags test` of the P1 DAG two days, one day, two
   hours and one hour ago and of the P0 DAG ten minutes ago, then a silence of one store;
3. runs `airflow standalone` (scheduler, dag-processor, triggerer, api-server on :8080,
   SQLite) with the DAGs unpaused: its first runs make the incidents fire;
4. prints the URL and the users with their passwords (admin, and viewer to see the
   read-only console);
5. Slack with buttons: a local stand-in for Slack (demo/slack_standin.py, 127.0.0.1:8026)
   receives the alerts through the Web API (`slack_loyalty_alerts` of type slack), and the
   Slack actions listener (`python -m loyalty_checks.slack_actions`) runs against it: open
   http://127.0.0.1:8026/demo and click Acknowledge, or
   `python -m demo.slack_standin click expiration_task_stale`.

Ctrl-C or SIGTERM stops the whole process tree: SIGTERM to the standalone's session,
then, after a grace period, SIGKILL to whatever of it is left (the scheduler and the
executor's workers included). LOYALTY_DEMO_UI_PORT, LOYALTY_DEMO_SINK_PORT (0: any),
LOYALTY_DEMO_UI_HISTORY=0 (no history runs), LOYALTY_DEMO_SLACK_PORT (0: any) and
LOYALTY_DEMO_DIR change the defaults.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from demo import embedded_pg
from demo.capture_server import CaptureServer
from demo.render import render
from demo.run import DEMO_DIR, MONITORING_DB, airflow_env, dags_test, pg_data_dir, prepare_databases
from demo.slack_standin import SlackStandin, describe

PORT = int(os.environ.get("LOYALTY_DEMO_UI_PORT", "8080"))
SINK_PORT = int(os.environ.get("LOYALTY_DEMO_SINK_PORT", "8025"))
SLACK_PORT = int(os.environ.get("LOYALTY_DEMO_SLACK_PORT", "8026"))
HISTORY = os.environ.get("LOYALTY_DEMO_UI_HISTORY", "1") != "0"
USERS = ("admin", "viewer")
GRACE = 20.0  # seconds between SIGTERM and SIGKILL


class Stop(Exception):
    """SIGTERM or SIGINT: stop everything."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def passwords(home: Path) -> dict[str, str]:
    """Known passwords: the simple auth manager reads this file; kept across runs."""
    path = home / "simple_auth_manager_passwords.json.generated"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = {}
    found = {u: found.get(u) or secrets.token_urlsafe(9) for u in USERS}
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found))
    return found


def history(pg: embedded_pg.PgServer, now: dt.datetime, env: dict[str, str], log_dir: Path, sink) -> None:
    """Earlier runs (the console's history) and a silence of one firing store."""
    hours = dt.timedelta(hours=1)
    for dag_id, t in (("loyalty_p1_checks", now - 48 * hours), ("loyalty_p1_checks", now - 24 * hours),
                      ("loyalty_p1_checks", now - 2 * hours), ("loyalty_p1_checks", now - hours),
                      ("loyalty_p0_checks", now - dt.timedelta(minutes=10))):
        state = dags_test(dag_id, t, env, log_dir)
        print(f"  history: {dag_id} at {t:%Y-%m-%d %H:%M} UTC -> {state}", flush=True)
        sink.take()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from loyalty_checks.silences import add_silence
    from loyalty_checks.store import ensure_schema

    with pg.connect(MONITORING_DB, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute("DELETE FROM loyalty_monitoring.silences WHERE author = 'demo'")
        add_silence(conn, "rate_limit_spikes", "Load test of store 6's rate limiter (demo)", "demo",
                    duration="6h", entity_id="6")
    print("  a silence: rate_limit_spikes, store 6, for 6 hours", flush=True)


def slack_standin() -> SlackStandin:
    """The Slack stand-in on SLACK_PORT (any free port when that one is taken), printing the
    messages it gets and the ephemeral replies."""
    def show(kind, record):
        if kind == "response" or (kind == "call" and record["method"] in ("chat.postMessage", "chat.update")):
            print(describe(kind, record), flush=True)

    try:
        return SlackStandin(port=SLACK_PORT, on_event=show)
    except OSError:
        return SlackStandin(port=0, on_event=show)


def slack_env(standin: SlackStandin) -> dict[str, str]:
    """Alerts through the Web API of the Slack stand-in, and the Slack app's socket there."""
    return {
        "AIRFLOW_CONN_SLACK_LOYALTY_ALERTS": json.dumps(
            {"conn_type": "slack", "password": "xoxb-demo", "extra": {"channel": "C0ALERTS",
                                                                       "base_url": standin.api_url}}),
        "AIRFLOW_CONN_SLACK_LOYALTY_SOCKET": json.dumps(
            {"conn_type": "slack", "password": "xapp-demo", "extra": {"base_url": standin.api_url}}),
    }


def start_listener(env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    """The Slack actions listener, as the loyalty-slack-actions service runs it."""
    root = Path(__file__).resolve().parents[1]
    env = {**env, "PYTHONPATH": os.pathsep.join([str(root / "plugins"), str(root)])}
    log = (log_dir / "slack-actions.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "loyalty_checks.slack_actions"], env=env, cwd=root,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop_tree(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """SIGTERM the session of `proc`, then SIGKILL whatever is left of it after `grace`."""
    import psutil

    def members() -> list:
        found = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getsid(p.pid) == proc.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (OSError, psutil.Error):
                pass
        return found

    for p in members():
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and members():
        proc.poll()
        time.sleep(0.3)
    for p in members():
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def main() -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    DEMO_DIR.mkdir(exist_ok=True)
    log_dir = DEMO_DIR / "logs"
    log_dir.mkdir(exist_ok=True)
    pg = embedded_pg.start(pg_data_dir(), keep=True)
    sink = CaptureServer(port=SINK_PORT, log_file=DEMO_DIR / "notifications.jsonl",
                         on_record=lambda r: print(render(r), flush=True)).start()
    standin = slack_standin().start()
    home = DEMO_DIR / "airflow-ui"
    proc = listener = None
    try:
        prepare_databases(pg, now, incidents=True)
        env = {**airflow_env(pg, sink.url, home), **slack_env(standin)}
        url = f"http://localhost:{PORT}"
        env.update({
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{u}" for u in USERS),
        })
        users = passwords(home)
        with (log_dir / "airflow-ui-setup.log").open("w") as log:
            for command in (["db", "migrate"],
                            ["pools", "set", "loyalty_db", "4", "Concurrent check queries on loyalty_db"]):
                subprocess.run([sys.executable, "-m", "airflow", *command], env=env, check=True, stdout=log,
                               stderr=subprocess.STDOUT)
        print(f"Demo platform as of {now.isoformat()}; notifications print here (sink {sink.url}).", flush=True)
        if HISTORY:
            print("Giving the alert console a history (about a minute)...", flush=True)
            history(pg, now, env, log_dir, sink)
        listener = start_listener(env, log_dir)
        log = (DEMO_DIR / "airflow-standalone.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        print(f"\nAirflow UI: {url}  (starting; about 30 s)\n"
              f"  sign in as admin / {users['admin']}   (or viewer / {users['viewer']}: read only)\n"
              f"  the alert console: {url}/loyalty/  (\"Loyalty alerts\" in the nav)\n"
              f"Slack (a local stand-in): {standin.url}/demo  - the alert messages; click Acknowledge there,\n"
              f"  or from a script: {sys.executable} -m demo.slack_standin click expiration_task_stale"
              f" --url {standin.url}\n"
              f"  (the listener's log: {log_dir / 'slack-actions.log'})\n"
              f"Log: {DEMO_DIR / 'airflow-standalone.log'}. Ctrl-C to stop everything.", flush=True)
        return proc.wait()
    except Stop as why:
        print(f"\n{why}: stopping Airflow (scheduler, api-server, workers)...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None:
            stop_tree(proc)
        if listener is not None:
            stop_tree(listener, grace=12.0)
        standin.stop()
        sink.stop()
        pg.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    os.chdir(DEMO_DIR.parent)
    sys.exit(main())
