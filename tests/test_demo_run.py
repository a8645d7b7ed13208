"""`make demo` works: the README's first command, run as a new user would (in a
subprocess, its own Airflow home), shows the demo's incidents as notifications."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def about_the_story(section: str) -> int:
    """The notifications printed in one run's section that are not about a check outside the
    demo's story: a site's own check, added with its four files, runs in the demo too and may
    notify, without changing what the story's checks send."""
    from tests.test_catalog import CONTRACT_IDS

    story = {check_id for ids in CONTRACT_IDS.values() for check_id in ids}
    count = 0
    for notification in section.split("\n  ┌ ")[1:]:
        named = set(re.findall(r"(?:runbooks\.md#|dedup_key=loyalty/)([a-z0-9_]+)", notification))
        count += not named or bool(named & story)
    return count


def test_make_demo_shows_the_incidents(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["LOYALTY_DEMO_DIR"] = str(tmp_path / "demo")
    out = subprocess.run([sys.executable, "-m", "demo.run"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = re.findall(r"=== airflow dags test (\w+) (\S+) -> run (\w+), (\d+) notification", out.stdout)
    sections = re.split(r"\n=== airflow dags test .*", out.stdout)[1:]
    assert len(sections) == len(runs)
    assert [(dag, state, about_the_story(section))
            for (dag, _, state, _), section in zip(runs, sections, strict=True)] == [
        ("loyalty_p0_checks", "success", 4),   # two pages, two Slack messages
        ("loyalty_p0_checks", "success", 0),   # still firing: quiet
        ("loyalty_p0_checks", "success", 2),   # the expiration task recovered: resolve + Slack
        ("loyalty_p1_checks", "success", 4),   # three P1 incidents and the till that stopped
        ("loyalty_p2_checks", "success", 1),   # the weekly digest
    ], out.stdout[-3000:]
    for expected in ("TRIGGER  dedup_key=loyalty/expiration_task_stale", "TRIGGER  dedup_key=loyalty/google_wallet_down",
                     "RESOLVE  dedup_key=loyalty/expiration_task_stale", "🔴 P1 FIRING · Rate limit spikes",
                     "📊 Loyalty weekly digest", "🔴 P1 FIRING · Store transactions far below usual",
                     "Harbour: 0 transactions in the last 2 h, usual for Mon 06:00–08:00 is 19 (11–29)"):
        assert expected in out.stdout
