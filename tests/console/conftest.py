"""The alert console under a real `airflow api-server` (simple auth manager, known passwords).

`console` (one for tests/console) seeds the alert state by running the real P1 DAG on
data where two stores of rate_limit_spikes fire (seed.py), then starts the api-server
with this repository's DAGs and plugins folders under an `[api] base_url` with a
sub-path (/airflow), on a copy of the session's SQLite metadata (with those DAG runs),
with the users admin (role admin) and viewer (role viewer) whose passwords are
pre-seeded. The api-server's `loyalty_db` goes through a TCP proxy that counts its
connections (`loyalty_db_proxy.accepted`): the api-server never opens one (backtests run
on a worker), its alert state is `loyalty_monitoring_db`. Teardown ends the api-server's
whole process group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE_DB, connection_env
from tests.e2e.conftest import airflow_process_env, free_port, tail
from tests.proxy import TcpProxy, pg_conn_via, pg_upstream

PASSWORDS = {"admin": "admin-pw-" + secrets.token_hex(4), "viewer": "viewer-pw-" + secrets.token_hex(4)}
BASE_PATH = "/airflow"  # the console must work under a base_url with a sub-path
START_TIMEOUT = float(os.environ.get("LOYALTY_CONSOLE_START_TIMEOUT", "120"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "console: the alert console against a real airflow api-server (and, for the browser "
        "tests, headless Chromium); part of `make test`, `make test-console` runs only these.")


@dataclass
class Console:
    """A running api-server with the console, and how to talk to it."""
    url: str                      # http://127.0.0.1:<port>/airflow (the base_url)
    proc: subprocess.Popen
    log: Path
    home: Path
    db_name: str
    seed: dict
    sink: object = None
    conns: dict[str, str] = field(default_factory=dict)  # AIRFLOW_CONN_* of its databases and sink
    tokens: dict[str, str] = field(default_factory=dict)
    loyalty_db_proxy: TcpProxy | None = None  # the api-server's loyalty_db: counts connections

    def token(self, user: str) -> str:
        """A JWT for `user` from POST {base}/auth/token, cached."""
        if user not in self.tokens:
            r = self.client().post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
            assert r.status_code == 201, (r.status_code, r.text)
            self.tokens[user] = r.json()["access_token"]
        return self.tokens[user]

    def client(self, user: str | None = None, **kw):
        """An httpx client on the base URL, with `user`'s bearer token when given."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, trust_env=False, timeout=30,
                            follow_redirects=False, **kw)

    def report(self) -> str:
        return f"api-server log {self.log}:\n{tail(self.log, 60)}"


def _stop(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database, including what is still in its write-ahead log."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _server_env(home: Path, port: int, metadata: Path, conns: dict[str, str]) -> dict[str, str]:
    env = airflow_process_env(home)
    env.update({
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{metadata}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}{BASE_PATH}",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        **conns,
    })
    return env


@pytest.fixture(scope="package")
def console(pg, dagbag, tmp_path_factory):
    """A started api-server with the console and seeded alert state (see the module doc)."""
    from demo.capture_server import CaptureServer
    from tests.console import seed

    root = tmp_path_factory.mktemp("console")
    home = root / "home"
    home.mkdir()
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    db_name = f"loyalty_console_{uuid.uuid4().hex[:8]}"
    pg.create_database(db_name, template=TEMPLATE_DB)
    sink = CaptureServer().start()
    conns = connection_env(pg, db_name, sink.url)
    proc = None
    loyalty_db_proxy = TcpProxy(pg_upstream(pg)).start()
    try:
        with pytest.MonkeyPatch.context() as mp:  # the DAG runs in this process use the same connections
            for k, v in conns.items():
                mp.setenv(k, v)
            seeded = seed.seed(pg, db_name, dagbag, sink)
        # The session's metadata database, migrated and now holding the seed's DAG runs (so that the
        # UI shows the DAG, its Alerts tab and the runs the console links to): a copy is instant.
        metadata = home / "airflow.db"
        _copy_sqlite(Path(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")), metadata)
        port = free_port()
        env = _server_env(home, port, metadata,
                          {**conns, "AIRFLOW_CONN_LOYALTY_DB": pg_conn_via(loyalty_db_proxy, pg, db_name)})
        log = root / "api-server.log"
        with log.open("ab") as out:  # the DAGs as the dag-processor would store them
            subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, check=True, timeout=120)
            proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
                                    start_new_session=True)
        server = Console(url=f"http://127.0.0.1:{port}{BASE_PATH}", proc=proc, log=log, home=home,
                         db_name=db_name, seed=seeded, sink=sink, conns=conns, loyalty_db_proxy=loyalty_db_proxy)
        _wait_healthy(server)
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        sink.stop()
        loyalty_db_proxy.stop()
        pg.drop_database(db_name)


@pytest.fixture(scope="module")
def admin(console):
    """A client of the console signed in as admin (role admin: may add silences)."""
    with console.client("admin") as c:
        yield c


@pytest.fixture(scope="module")
def viewer(console):
    """A client of the console signed in as viewer (role viewer: reads only)."""
    with console.client("viewer") as c:
        yield c


def _wait_healthy(server: Console) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"airflow api-server exited with {server.proc.returncode}\n{server.report()}")
        try:
            r = httpx.get(f"{server.url}/api/v2/monitor/health", timeout=5, trust_env=False)
            if r.status_code == 200:
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.3)
    raise AssertionError(f"api-server not healthy after {START_TIMEOUT:.0f} s (last: {last})\n{server.report()}")
