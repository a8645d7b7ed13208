"""The backtest figures of `make bench` (issue 11): evaluations per second and memory.

In a subprocess of its own (clean RSS): a 30-day backtest of each P0 and P1 check that
reads loyalty_db, a year of the slowest P2 check, and a 30-day threshold sweep of
rate_limit_spikes, each through `loyalty_checks.backtest.run_backtest` on the bench
database (one prepared statement per check, read-only transactions, the lifecycle in
memory). Memory: the peak of Python allocations (tracemalloc) of a P0 backtest over 3
and over 30 days, which should be about the same (flat in the number of evaluations),
and the worker's peak RSS.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

P0_MIN_RATE = 1000.0          # evaluations per second of a P0 check (8,640 in <= 10 s)
SECONDS_TARGET = {"P0": 10.0, "P1": 10.0, "P2": 60.0}
DAYS = {"P0": 30, "P1": 30, "P2": 365}
# A learned baseline reads every store's hourly counts of the period and its history in one
# query and judges them at each T: a week, against the week of shared/spec/baselines.md.
BASELINE_DAYS, BASELINE_TARGET = 7, 60.0
P2_CHECK = "low_redemption_rate"    # the slowest P2 SQL (docs/performance.md)
SWEEP = ("rate_limit_spikes", "threshold=80:200:10")
FLAT_CHECK = "expiration_task_stale"


def worker(config_file: str) -> int:
    import resource
    import tracemalloc

    import psycopg

    from bench import generate as gen
    from loyalty_checks.backtest import run_backtest
    from loyalty_checks.catalog import catalog

    config = json.loads(Path(config_file).read_text())
    t = dt.datetime.fromisoformat(config["t"])
    cat = catalog()
    plan = [c for c in cat.checks if c.severity in ("P0", "P1") and c.source == "loyalty_db"]
    plan.append(cat.check(P2_CHECK))
    rows = []
    with psycopg.connect(gen.conninfo_for(config["dsn"], config["large_db"]), application_name="bench.backtest") as conn:
        for check in plan:
            days = BASELINE_DAYS if check.baseline is not None else DAYS[check.severity]
            started = time.perf_counter()
            result = run_backtest(check.id, t - dt.timedelta(days=days), t, {}, conn, cat)
            seconds = time.perf_counter() - started
            rows.append({"check": check.id, "severity": check.severity, "days": days, "seconds": seconds,
                         "baseline": check.baseline is not None,
                         "evaluations": result["evaluations"], "errors": result["errors"],
                         "notifications": result["summary"]["notifications"],
                         "rate": result["evaluations"] / seconds if seconds else None})
        started = time.perf_counter()
        swept = run_backtest(SWEEP[0], t - dt.timedelta(days=30), t, {}, conn, cat, sweep=SWEEP[1])
        sweep = {"check": SWEEP[0], "sweep": SWEEP[1], "candidates": len(swept["sweep"]),
                 "evaluations": swept["evaluations"], "seconds": time.perf_counter() - started}
        flat = {}
        run_backtest(FLAT_CHECK, t - dt.timedelta(days=1), t, {}, conn, cat)   # warm-up: lazy imports, caches
        for days in (10, 30):
            tracemalloc.start()
            run_backtest(FLAT_CHECK, t - dt.timedelta(days=days), t, {}, conn, cat)
            flat[days] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    out = {"rows": rows, "sweep": sweep, "flat": flat,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(config["result"]).write_text(json.dumps(out))
    return 0


def measure(dsn: str, large_db: str, t: dt.datetime, workdir: Path, env: dict[str, str], log) -> dict[str, Any]:
    config = {"dsn": dsn, "large_db": large_db, "t": t.isoformat(), "result": str(workdir / "backtest.json")}
    (workdir / "backtest-config.json").write_text(json.dumps(config))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--worker", "backtest",  # noqa: S603
                           str(workdir / "backtest-config.json")], env=env, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"backtest worker failed:\n{proc.stderr[-3000:]}")
    data = json.loads(Path(config["result"]).read_text())
    for r in data["rows"]:
        r["target"] = BASELINE_TARGET if r.get("baseline") else SECONDS_TARGET[r["severity"]]
        r["pass"] = r["seconds"] <= r["target"] and (r["severity"] != "P0" or (r["rate"] or 0) >= P0_MIN_RATE)
        log(f"  {r['check']:24} {r['days']:>3} days {r['evaluations']:>6,} evaluations in {r['seconds']:.2f} s"
            f" ({r['rate']:,.0f}/s)")
    flat = data["flat"]
    data["flat_pass"] = flat["30"] <= 1.5 * flat["10"] + 1.0   # 3 times the evaluations, about the same peak
    log(f"  allocations peak: 10 days {flat['10']:.1f} MB, 30 days {flat['30']:.1f} MB; RSS {data['peak_rss_mb']:.0f} MB")
    return data


def report(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Markdown lines of the report's backtest section, and the targets missed."""
    out, misses = ["\n## Backtest (issue 11)\n",
                   "`loyalty_checks.backtest.run_backtest` on the bench database as of T, in a worker process: "
                   "every scheduled T of the check's DAG, one prepared statement reused across T in read-only "
                   "transactions of 500 evaluations, the lifecycle replayed in memory. Targets (scale 1): 30 days of a "
                   f"P0 check (8,640 evaluations) in ≤ 10 s, i.e. ≥ {P0_MIN_RATE:,.0f} evaluations/s; 30 days of a P1 "
                   "check in ≤ 10 s; a year of a P2 check in ≤ 60 s; memory flat in the number of evaluations. A learned "
                   "baseline (`store_transactions_drop`): a week in ≤ 60 s (shared/spec/baselines.md; every store's "
                   "hourly counts of the week and its 4 weeks of history read in one query).\n",
                   "| check | sev | period | evaluations | time | evaluations/s | target | | notifications | errors |",
                   "|---|---|---|---|---|---|---|---|---|---|"], []
    for r in data["rows"]:
        target = f"≤ {r['target']:.0f} s" + (f", ≥ {P0_MIN_RATE:,.0f}/s" if r["severity"] == "P0" else "")
        out.append(f"| `{r['check']}` | {r['severity']} | {r['days']} days | {r['evaluations']:,} | {r['seconds']:.2f} s "
                   f"| {r['rate']:,.0f} | {target} | {'pass' if r['pass'] else '**MISS**'} | {r['notifications']} "
                   f"| {r['errors']} |")
        if not r["pass"]:
            misses.append(f"backtest of `{r['check']}` ({r['days']} days): {r['seconds']:.2f} s, {r['rate']:,.0f}/s")
    s = data["sweep"]
    out.append(f"\nSweep: `{s['check']}` `--sweep {s['sweep']}` over 30 days, {s['candidates']} candidates on "
               f"{s['evaluations']:,} evaluations of the SQL (measured once per T, replayed per candidate): "
               f"{s['seconds']:.2f} s.")
    flat = data["flat"]
    out.append(f"\nMemory: peak Python allocations of a `{FLAT_CHECK}` backtest {flat['10']:.1f} MB over 10 days, "
               f"{flat['30']:.1f} MB over 30 days ({'flat: pass' if data['flat_pass'] else '**MISS**: grows'}); "
               f"worker peak RSS {data['peak_rss_mb']:.0f} MB. `p0_checks_stale` reads loyalty_monitoring "
               "(not the bench data) and is left out.")
    if not data["flat_pass"]:
        misses.append(f"backtest memory grows: {flat['10']:.1f} MB (10 days) → {flat['30']:.1f} MB (30 days)")
    return out, misses
