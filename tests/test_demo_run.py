"""`make demo` works: the README's first command, run as a new user would (in a
subprocess, its own Airflow home), shows the demo's incidents as notifications."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_make_demo_shows_the_incidents(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["LOYALTY_DEMO_DIR"] = str(tmp_path / "demo")
    out = subprocess.run([sys.executable, "-m", "demo.run"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = re.findall(r"=== airflow dags test (\w+) (\S+) -> run (\w+), (\d+) notification", out.stdout)
    assert [(dag, state, int(n)) for dag, _, state, n in runs] == [
        ("loyalty_p0_checks", "success", 4),   # two pages, two Slack messages
        ("loyalty_p0_checks", "success", 0),   # still firing: quiet
        ("loyalty_p0_checks", "success", 2),   # the expiration task recovered: resolve + Slack
        ("loyalty_p1_checks", "success", 3),
        ("loyalty_p2_checks", "success", 1),   # the weekly digest
    ], out.stdout[-3000:]
    for expected in ("TRIGGER  dedup_key=loyalty/expiration_task_stale", "TRIGGER  dedup_key=loyalty/google_wallet_down",
                     "RESOLVE  dedup_key=loyalty/expiration_task_stale", "🔴 P1 FIRING · Rate limit spikes",
                     "📊 Loyalty weekly digest"):
        assert expected in out.stdout
