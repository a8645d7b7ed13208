"""One evaluation of each learned-baseline check at the bench's scale (shared/spec/baselines.md:
one P1 evaluation at scale 1 in <= 2 s), and what its SQL's leaving out of the stores that
cannot be judged costs: nothing, if every judgement is the same as over every store.

Measured through the DAGs' own path: `measure` (the check's SQL, read only) then
`pipeline.outcome_of` (the judging), wall time at the client, at three times T of the week.
The same T with `min_expected` unbound (NULL: every store of the span, as a backtest reads)
gives the judgements to compare with.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import psycopg

from bench import generate as gen

TARGET_S = 2.0
OFFSETS = (dt.timedelta(0), dt.timedelta(hours=-42), dt.timedelta(hours=-110))  # Mon 08:00, Sat 14:00, Wed 18:00


def _judged(outcome) -> dict[str, tuple]:
    return {e["id"]: (e["judged"], e.get("value"), e.get("expected"), tuple(e.get("band") or ()))
            for e in getattr(outcome, "all_entities", []) if e["judged"] in ("firing", "ok")}


def measure(dsn: str, dbname: str, t: dt.datetime, runs: int, log) -> list[dict[str, Any]]:
    from loyalty_checks import pipeline
    from loyalty_checks.catalog import catalog
    from loyalty_checks.measure import Measurement, fetch, shape_hourly, sql_parameters

    out = []
    with psycopg.connect(gen.conninfo_for(dsn, dbname), application_name="bench.baseline_eval") as conn:
        for check in [c for c in catalog().checks if c.baseline is not None and c.source == "loyalty_db"]:
            for offset in OFFSETS:
                at = t + offset
                times, outcome, measured = [], None, None
                for _ in range(runs + 1):  # a warm-up, then `runs`
                    started = time.perf_counter()
                    measured = pipeline.measure(check, at, conn)
                    outcome = pipeline.outcome_of(check, measured)
                    times.append(time.perf_counter() - started)
                times = times[1:]
                params = sql_parameters(check, at)
                params["min_expected"] = None
                started = time.perf_counter()
                columns, rows = fetch(conn, check.sql_path.read_text(encoding="utf-8"), params,
                                      dt.timedelta(minutes=10), "bench:baseline:every-store")
                every = pipeline.outcome_of(check, Measurement(check.id, at, **shape_hourly(check, columns, rows)))
                every_s = time.perf_counter() - started
                row = {"check": check.id, "t": at, "median": statistics.median(times), "max": max(times),
                       "error": measured.error, "stores_read": len(measured.entities or []),
                       "judged": _judged(outcome), "every_stores": every.entities_total,
                       "every_s": every_s, "same": _judged(outcome) == _judged(every)}
                row["pass"] = row["error"] is None and row["median"] <= TARGET_S
                out.append(row)
                log(f"  {check.id} at {at:%a %H:%M}: {row['median'] * 1000:.0f} ms, {row['stores_read']} stores read,"
                    f" {len(row['judged'])} judged; every store: {row['every_stores']} in {every_s:.1f} s,"
                    f" same judgements: {row['same']}")
    return out


def report(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    if not rows:
        return [], []
    lines = ["\n## Learned baselines: one evaluation\n",
             "Each baseline check through the DAGs' path (`measure`, the check's SQL, then `pipeline.outcome_of`, "
             "the judging; wall time at the client, median and max after a warm-up) at three times T of the week; "
             "target: one evaluation at scale 1 ≤ 2 s (shared/spec/baselines.md). The SQL reads only the stores "
             "that can be judged; the last columns read every store of the span (`min_expected` NULL, as a "
             "backtest does) and compare the judgements (firing or ok, count, expected, band) of both.\n",
             "| check | T | evaluation (median) | max | target | | stores read | judged (firing / ok) "
             "| every store: read | its time | same judgements |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    misses = []
    for r in rows:
        firing = sum(j[0] == "firing" for j in r["judged"].values())
        median = r["error"] or f"{r['median'] * 1000:,.0f} ms"
        lines.append(f"| `{r['check']}` | {r['t']:%a %Y-%m-%d %H:%M} | {median}"
                     f" | {r['max'] * 1000:,.0f} ms | ≤ {TARGET_S:g} s | {'pass' if r['pass'] else '**miss**'}"
                     f" | {r['stores_read']:,} | {len(r['judged'])} ({firing} / {len(r['judged']) - firing})"
                     f" | {r['every_stores']:,} | {r['every_s']:.1f} s | {'yes' if r['same'] else '**NO**'} |")
        if not r["pass"]:
            misses.append(f"`{r['check']}` one evaluation at {r['t']:%a %H:%M}: {r['median']:.2f} s (≤ {TARGET_S:g} s)")
        if not r["same"]:
            misses.append(f"`{r['check']}` at {r['t']:%a %H:%M}: leaving out stores changed a judgement")
    return lines, misses
