"""`make demo-ui`: the Airflow UI on the demo platform, with the check DAGs scheduled.

Generates the demo platform as of now (so the scheduled runs see its incidents), starts
the capture server on 127.0.0.1:8025 and prints each notification as it arrives, then
runs `airflow standalone` (scheduler, dag-processor, api-server on :8080, SQLite) with
the DAGs unpaused. Ctrl-C stops everything.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from demo import embedded_pg
from demo.capture_server import CaptureServer
from demo.render import render
from demo.run import DEMO_DIR, airflow_env, pg_data_dir, prepare_databases

SINK_PORT = 8025


def main() -> int:
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    DEMO_DIR.mkdir(exist_ok=True)
    pg = embedded_pg.start(pg_data_dir(), keep=True)
    sink = CaptureServer(port=SINK_PORT, log_file=DEMO_DIR / "notifications.jsonl",
                         on_record=lambda r: print(render(r), flush=True)).start()
    home = DEMO_DIR / "airflow-ui"
    try:
        prepare_databases(pg, now, incidents=True)
        env = airflow_env(pg, sink.url, home)
        env.update({
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__BASE_URL": "http://localhost:8080",
            "AIRFLOW__CORE__PARALLELISM": "4",
        })
        log = open(DEMO_DIR / "airflow-standalone.log", "w")
        for command in (["db", "migrate"], ["pools", "set", "loyalty_db", "4", "Concurrent check queries on loyalty_db"]):
            subprocess.run([sys.executable, "-m", "airflow", *command], env=env, check=True, stdout=log,
                           stderr=subprocess.STDOUT)
        print(f"Demo platform as of {now.isoformat()}; notifications print here (sink {sink.url}).")
        print(f"Airflow UI: http://localhost:8080 — user 'admin', password in {home}/"
              "simple_auth_manager_passwords.json.generated. Ctrl-C to stop.", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=60)
            return 0
    finally:
        sink.stop()
        pg.stop()


if __name__ == "__main__":
    os.chdir(DEMO_DIR.parent)
    sys.exit(main())
