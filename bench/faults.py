"""`make bench-faults` (also run by `make bench`): how long from a fault to its error page.

    python -m bench.faults            # the dag.test() fault cases and the "done when" run (~3 min)
    python -m bench.faults --e2e      # plus the scheduled run under a real scheduler (~3 min more)

Runs the fault tests of issue 9 (tests/test_time_budgets.py, tests/test_done_when.py and,
with --e2e, tests/e2e/test_time_budget.py), each injecting its fault through a real TCP
proxy in front of the real PostgreSQL or the local HTTP capture server, and prints what
they measured: seconds from the moment the link went silent (or the run started, for
Slack/PagerDuty) to the error page at the capture server. A benchmark, not a timed
assertion: the tests themselves only bound these by the catalog's budget. The figures of
docs/reliability.md come from here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_time_budgets.py", "tests/test_done_when.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", action="store_true", help="also the scheduled run under a real scheduler")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loyalty-faults-") as tmp:
        timings = Path(tmp) / "timings.jsonl"
        env = {**os.environ, "LOYALTY_FAULT_TIMINGS": str(timings)}
        tests = TESTS + (["tests/e2e/test_time_budget.py"] if args.e2e else [])
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],  # noqa: S603
                              cwd=ROOT, env=env, check=False)
        rows = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
    print("\n| fault (injected through a real TCP proxy) | fault -> error page |")
    print("|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['seconds']:.1f} s |")
    if done.returncode:
        print(f"\n(some fault tests failed: exit {done.returncode}; figures above are those that ran)")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
