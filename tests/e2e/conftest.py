"""End-to-end tests under a real Airflow: scheduler, dag-processor, api-server (and a
Celery worker), as separate processes on a PostgreSQL metadata database.

`airflow_stack(executor)` starts one such deployment in a temporary AIRFLOW_HOME, with
the package's DAGs and plugins, its connections pointing at a loyalty database and at
a local capture server, and returns an `AirflowStack` to drive it through the REST API.
Every process writes to a log file in the temporary folder; failures quote the tails of
those logs (and of the task logs); teardown ends every process the stack started, by
session, SIGTERM then SIGKILL, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit
from urllib.request import ProxyHandler, Request, build_opener

import pytest

from tests.conftest import ROOT, connection_env

DAG_ID = "loyalty_p0_checks"
# Seconds per scenario, from the start of the stack to the finished run (about 30 s in practice).
SCENARIO_TIMEOUT = float(os.environ.get("LOYALTY_E2E_TIMEOUT", "180"))
AIRFLOW = [sys.executable, "-m", "airflow"]
REDIS_URL = os.environ.get("LOYALTY_E2E_REDIS_URL", "redis://127.0.0.1:6379/11")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end to end under a real Airflow scheduler, dag-processor, api-server "
        "(and Celery worker); about a minute each. `make test-e2e` runs only these.")


# ---------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlalchemy_url(pg, dbname: str, scheme: str) -> str:
    """A SQLAlchemy URL for a database of the `pg` server (a Unix socket directory or a host)."""
    auth = quote(pg.user, safe="") + (":" + quote(pg.password, safe="") if pg.password else "")
    if pg.host.startswith("/"):
        query = f"host={quote(pg.host)}" + (f"&port={pg.port}" if pg.port else "")
        return f"{scheme}://{auth}@/{dbname}?{query}"
    return f"{scheme}://{auth}@{pg.host}:{pg.port or 5432}/{dbname}"


def airflow_process_env(home: Path) -> dict[str, str]:
    """This process's environment without its Airflow settings, for an Airflow of its own in
    `home` with the package's DAGs and plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.update({
        # Components start `airflow ...` subprocesses: this venv's must come first.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    })
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"({e})"
    return "\n".join(text.splitlines()[-lines:])


def redis_unavailable(url: str) -> str | None:
    """Why the Celery scenario cannot run, or None."""
    import importlib.util

    if importlib.util.find_spec("airflow.providers.celery") is None:
        return "apache-airflow-providers-celery is not installed"
    if importlib.util.find_spec("redis") is None:
        return "the redis client library is not installed"
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as e:
        return f"Redis is not reachable at {url}: {e}"
    if not reply.startswith(b"+PONG"):
        return f"Redis at {url} did not answer PING: {reply!r}"
    return None


def _session_members(sid: int) -> list:
    """Live processes of the session `sid` (task processes get their own process groups)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid \
                    and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            pass
    return members


class AirflowStack:
    """One Airflow deployment: environment, CLI, long-running components, REST API."""

    def __init__(self, name: str, root: Path, env: dict[str, str], api_url: str, sink):
        self.name, self.root, self.env, self.api_url, self.sink = name, root, env, api_url, sink
        self.home = Path(env["AIRFLOW_HOME"])
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.logs: list[Path] = []
        self._http = build_opener(ProxyHandler({}))  # never through a proxy: everything is local

    # -------------------------------------------------------- processes

    def cli(self, *args: str, timeout: float = 120) -> None:
        log = self.root / f"cli-{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        self.logs.append(log)
        with log.open("ab") as out:
            try:
                rc = subprocess.run([*AIRFLOW, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=timeout, cwd=self.root).returncode
            except subprocess.TimeoutExpired:
                rc = f"timeout after {timeout:.0f} s"
        if rc != 0:
            raise AssertionError(f"`airflow {' '.join(args)}` failed ({rc}):\n{tail(log, 60)}")

    def start(self, name: str, *args: str) -> None:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with log.open("ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen([*AIRFLOW, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.root, start_new_session=True)
        self.procs[name] = (proc, log)

    def check_alive(self) -> None:
        for name, (proc, _) in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(self.report(f"`airflow {name}` exited with {proc.returncode}"))

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each component's process group, then SIGKILL whatever is left of its session."""
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc, _ in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while time.monotonic() < deadline and any(_session_members(p.pid) for p, _ in self.procs.values()):
            time.sleep(0.2)
        for proc, _ in self.procs.values():
            for member in _session_members(proc.pid):
                with contextlib.suppress(Exception):  # gone meanwhile
                    member.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -------------------------------------------------------- REST API

    def api(self, method: str, path: str, body=None) -> tuple[int | None, object]:
        """(status, parsed JSON or text); status None when the server cannot be reached."""
        data = json.dumps(body).encode() if body is not None else None
        request = Request(self.api_url + path, data=data, method=method,  # noqa: S310 - our own http://127.0.0.1
                          headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with self._http.open(request, timeout=10) as response:
                raw, status = response.read(), response.status
        except OSError as e:  # HTTPError is an OSError too
            if hasattr(e, "code") and hasattr(e, "read"):
                raw, status = e.read(), e.code
            else:
                return None, repr(e)
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def get(self, path: str):
        status, body = self.api("GET", path)
        if status != 200:
            raise AssertionError(self.report(f"GET {path} -> {status}: {body}"))
        return body

    # -------------------------------------------------------- waiting and reporting

    def wait_for(self, what: str, condition, deadline: float, interval: float = 0.5):
        """Poll `condition()` until it returns something truthy; fail with the logs at `deadline`."""
        last = None
        while True:
            self.check_alive()
            try:
                result = condition()
            except AssertionError:
                raise
            except Exception as e:  # reported if it never succeeds
                result, last = None, repr(e)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(self.report(f"timed out waiting for {what}" + (f" (last error: {last})" if last else "")))
            time.sleep(interval)

    def task_logs(self, count: int = 4) -> list[Path]:
        files = [p for p in (self.home / "logs").rglob("*.log") if "dag_id=" in str(p)]
        return sorted(files, key=lambda p: p.stat().st_mtime)[-count:]

    def report(self, message: str) -> str:
        """`message` followed by the tails of the component logs, the latest task logs and the sink."""
        parts = [f"[{self.name}] {message}"]
        for name, (proc, log) in self.procs.items():
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            parts.append(f"----- airflow {name} ({state}), {log}:\n{tail(log)}")
        for log in self.task_logs():
            parts.append(f"----- task log {log.relative_to(self.home)}:\n{tail(log, 25)}")
        sent = [(r["path"], (r["body"] or {}).get("dedup_key") if isinstance(r["body"], dict) else None)
                for r in self.sink.requests]
        parts.append(f"----- capture server received: {sent}")
        return "\n".join(parts)


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def airflow_stack(pg, loyalty_db, sink, tmp_path_factory):
    """airflow_stack(executor, celery_broker=, celery_queue=, deadline=, extra_env=) -> a started AirflowStack
    with DAG_ID parsed (still paused); stopped and its metadata database dropped at teardown.
    `extra_env` overrides the environment of every component (connections, LOYALTY_CHECKS_CATALOG)."""
    stacks: list[tuple[AirflowStack, str]] = []

    def start(executor: str = "LocalExecutor", celery_broker: str | None = None, celery_queue: str | None = None,
              deadline: float | None = None, extra_env: dict[str, str] | None = None) -> AirflowStack:
        deadline = deadline or time.monotonic() + SCENARIO_TIMEOUT
        root = tmp_path_factory.mktemp(f"e2e-{executor.lower()}")
        home = root / "home"
        (home / "config").mkdir(parents=True)
        # As deployed (docs/deploy.md): the worker parents preload before they fork.
        shutil.copy(ROOT / "config" / "airflow_local_settings.py", home / "config")
        meta_db = f"airflow_e2e_{uuid.uuid4().hex[:10]}"
        pg.create_database(meta_db)
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        env = airflow_process_env(home)
        env.update({
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(pg, meta_db, "postgresql+psycopg"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
            **connection_env(pg, loyalty_db, sink.url),
            **(extra_env or {}),
        })
        if executor == "CeleryExecutor":
            env.update({
                "AIRFLOW__CELERY__BROKER_URL": celery_broker or REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sqlalchemy_url(pg, meta_db, "postgresql+psycopg"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
                # A queue of its own, so that other workers on the same Redis never take these tasks.
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": celery_queue or "default",
            })
        stack = AirflowStack(executor, root, env, api_url, sink)
        stacks.append((stack, meta_db))

        stack.cli("db", "migrate")
        stack.cli("pools", "set", "loyalty_db", "4", "Concurrent check queries on loyalty_db")
        stack.start("api-server", "api-server")
        stack.start("scheduler", "scheduler")
        stack.start("dag-processor", "dag-processor")
        if executor == "CeleryExecutor":
            stack.start("celery-worker", "celery", "worker", "--queues", env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"],
                        "--celery-hostname", f"{meta_db}@%h", "--without-gossip", "--without-mingle")

        def healthy():
            status, body = stack.api("GET", "/api/v2/monitor/health")
            return status == 200 and all(
                (body.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor"))

        stack.wait_for("the api-server, scheduler and dag-processor to report healthy", healthy, deadline)

        def parsed():
            status, _ = stack.api("GET", f"/api/v2/dags/{DAG_ID}")
            if status == 200:
                return True
            errors = stack.get("/api/v2/importErrors").get("import_errors") or []
            if errors:
                raise AssertionError(stack.report(f"DAG import errors: {json.dumps(errors, indent=1)}"))
            return False

        stack.wait_for(f"{DAG_ID} to be parsed", parsed, deadline)
        return stack

    yield start

    for stack, meta_db in stacks:
        try:
            stack.stop()
        finally:
            pg.drop_database(meta_db)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
