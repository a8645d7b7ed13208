"""`make demo-ui` as a new user runs it: it prints the URL with users and passwords that
work, the console answers, and SIGTERM stops the whole process tree (airflow standalone's
scheduler, api-server, dag-processor, triggerer and executor workers)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e
START_TIMEOUT = 240


def test_demo_ui_prints_working_credentials_and_stops_its_tree_on_sigterm(tmp_path):
    import httpx
    import psutil

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.update({"LOYALTY_DEMO_UI_PORT": str(port), "LOYALTY_DEMO_SINK_PORT": "0", "LOYALTY_DEMO_UI_HISTORY": "0",
                "LOYALTY_DEMO_DIR": str(tmp_path / "demo"), "NO_PROXY": "*", "PYTHONUNBUFFERED": "1"})
    out_path = tmp_path / "demo-ui.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "demo.ui"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        token = None
        while time.monotonic() < deadline and token is None:
            assert proc.poll() is None, out_path.read_text()[-3000:]
            text = out_path.read_text(errors="replace")
            found = re.search(r"sign in as admin / (\S+)", text)
            if found:
                try:
                    r = httpx.post(f"http://localhost:{port}/auth/token", trust_env=False, timeout=5,
                                   json={"username": "admin", "password": found.group(1)})
                    token = r.json()["access_token"] if r.status_code == 201 else None
                except httpx.HTTPError:
                    pass
            time.sleep(1)
        assert token, f"no working credentials within {START_TIMEOUT} s:\n{out_path.read_text()[-3000:]}"
        assert f"http://localhost:{port}/loyalty/" in out_path.read_text()
        r = httpx.get(f"http://localhost:{port}/loyalty/api/checks", trust_env=False, timeout=30,
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text

        tree = [proc_ for proc_ in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 3  # standalone and its components
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        took = time.monotonic() - stopped
        alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], [(p.pid, p.cmdline()[:4]) for p in alive]
        assert took < 90, took  # a clean stop takes seconds; a busy machine may take more; a hang never ends
        assert "Stopped." in out_path.read_text()
    finally:
        for p in [*tree, psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None:
                try:
                    p.kill()
                except psutil.Error:
                    pass
