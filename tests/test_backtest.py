"""Backtest and alert quality against a real PostgreSQL (spec/backtest.md).

One history: 12 hours of HTTP 429 bursts of three stores, hour by hour (below). The
backtest of rate_limit_spikes must predict, T by T and channel by channel, what the P1
DAG sends when dag.test() runs it at each of those hours; `--set` and `--sweep` must
change the prediction as the lifecycle says; quality over what the runs recorded must
count the same notifications, episodes and flaps; bad input exits 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from loyalty_checks.backtest import BacktestError, plot_png, run_backtest, without_series
from loyalty_checks.quality import history
from tests.conftest import ROOT
from tests.sql.rows import H, S, T, merchant, store

START = T - 12 * H
P1 = "loyalty_p1_checks"
# Worst minute of 429s per store in the hour ending at START + h hours (threshold > 100).
BURSTS = {10: {1: 50, 2: 150, 3: 120, 4: 50, 5: 130, 6: 50, 9: 200, 10: 200, 11: 120, 12: 50},
          11: {3: 110, 4: 90, 7: 101},
          12: {1: 5, 8: 5}}


def build_history(db) -> None:
    merchant(db, 1, "Acme")
    for s in BURSTS:
        store(db, s, 1, f"Store {s}")
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT s, %s + h * interval '1 hour' - interval '30 minutes', 'POST', '/api/loyalty'"
               " FROM unnest(%s::int[], %s::int[], %s::int[]) AS v(s, h, n), generate_series(1, n)",
               (START, *map(list, zip(*[(s, h, n) for s, by in BURSTS.items() for h, n in by.items()],
                                      strict=True))))


def hour(iso: str) -> int:
    from datetime import datetime

    return int((datetime.fromisoformat(iso) - START) / H)


def by_hour(result) -> dict[int, list[tuple[str, list[str]]]]:
    out: dict[int, list] = {}
    for n in result["notifications"]:
        out.setdefault(hour(n["t"]), []).append((n["event"], n["entities"]))
    return out


SLACK_EVENT = {"FIRING": "trigger", "CHANGED": "update", "STILL FIRING": "reminder", "RESOLVED": "resolve",
               "ESCALATED TO PAGERDUTY": "escalate", "CHECK FAILED": "error", "CHECK RUNS AGAIN": "error_resolve"}


def sent_events(requests) -> list[tuple[str, str]]:
    """(event, channel) of what the capture server received, rate_limit_spikes only."""
    out = []
    for r in requests:
        if r["path"].startswith("/slack/alerts"):
            m = re.match(r"^\[P1\] (FIRING|CHANGED|STILL FIRING|RESOLVED|ESCALATED TO PAGERDUTY|CHECK FAILED"
                         r"|CHECK RUNS AGAIN)\b.*?: ?(.*)$", r["body"]["text"])
            assert m and "Rate limit spikes" in r["body"]["text"], r["body"]["text"]
            out.append((SLACK_EVENT[m.group(1)], "slack"))
        elif r["path"].startswith("/pagerduty"):
            assert r["body"]["dedup_key"].startswith("loyalty/rate_limit_spikes"), r["body"]
            out.append((r["body"]["event_action"], "pagerduty"))
        else:
            raise AssertionError(f"unexpected request {r['path']}")
    return sorted(out)


# The lifecycle by hand, for the current catalog (> 100, for_runs 1, clear_runs 1, repeat_after 24h).
EXPECTED = {2: [("trigger", ["10"])], 3: [("update", ["11"])], 4: [("resolve", ["10", "11"])],
            5: [("trigger", ["10"])], 6: [("resolve", ["10"])], 7: [("trigger", ["11"])],
            8: [("resolve", ["11"])], 9: [("trigger", ["10"])], 12: [("resolve", ["10"])]}


def test_backtest_predicts_what_the_dag_sends_hour_by_hour_and_quality_counts_the_same(db, run_dag, sink, pg,
                                                                                         loyalty_db, tmp_path):
    build_history(db)
    result = run_backtest("rate_limit_spikes", START, T, {}, db)
    assert result["evaluations"] == 12 and result["errors"] == 0
    assert by_hour(result) == EXPECTED
    assert result["summary"] | {"noisiest": None} == {
        "notifications": 9, "pages": 0, "episodes": 4, "flaps": 3, "firing_share": round(7 / 12, 4),
        "median_resolve_seconds": 5400.0, "longest_resolve_seconds": 10800.0, "errors": 0, "evaluations": 12,
        "noisiest": None}
    assert [(hour(e["start"]), e["end"] and hour(e["end"]), e["entities"]) for e in result["episodes"]] == [
        (2, 4, ["10", "11"]), (5, 6, ["10"]), (7, 8, ["11"]), (9, 12, ["10"])]
    predicted = {hour(n["t"]): sorted((n["event"], c) for c in n["channels"]) for n in result["notifications"]}

    sent = {}
    for h in range(1, 13):
        dr, states = run_dag(P1, START + h * H)
        assert dr.state == "success", states
        got = sent_events(sink.take())
        if got:
            sent[h] = got
    assert sent == predicted

    # What loyalty_monitoring recorded of those runs: the same figures (one Tally for both).
    recorded = history(db, START, T)["checks"]["rate_limit_spikes"]
    assert recorded == result["summary"]
    out = tmp_path / "quality.json"
    proc = subprocess.run([sys.executable, "-m", "loyalty_checks.quality", "--since", START.isoformat(),
                           "--until", T.isoformat(), "--dsn", pg.conninfo(loyalty_db), "--json", str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")}, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(out.read_text())["checks"]["rate_limit_spikes"]
    assert {k: cli[k] for k in ("notifications", "pages", "episodes", "flaps", "firing_share",
                                "median_resolve_seconds", "errors")} == {
        k: result["summary"][k] for k in ("notifications", "pages", "episodes", "flaps", "firing_share",
                                          "median_resolve_seconds", "errors")}
    assert "rate_limit_spikes" in proc.stdout

    # The Grafana checks dashboard's "Alert quality over the range": the same figures in SQL.
    from tests.test_grafana import expand

    panel = next(p for p in json.loads((ROOT / "grafana" / "dashboards" / "loyalty-checks.json").read_text())["panels"]
                 if p["title"] == "Alert quality over the range")
    cur = db.execute(expand(panel["targets"][0]["rawSql"], START + S, T, H))
    rows = {r[0]: dict(zip([d.name for d in cur.description], r, strict=True)) for r in cur.fetchall()}
    grafana = rows["rate_limit_spikes"]
    assert {k: float(grafana[k]) if grafana[k] is not None else None for k in (
        "notifications", "pages", "episodes", "flaps", "firing_share", "errors", "evaluations")} | {
        "median_resolve_seconds": grafana["median_resolve"], "longest_resolve_seconds": grafana["longest_resolve"]} == {
        k: result["summary"][k] for k in ("notifications", "pages", "episodes", "flaps", "firing_share", "errors",
                                          "evaluations", "median_resolve_seconds", "longest_resolve_seconds")}

    # The weekly digest's "alert quality, last 7 days": from the same code, with a silence ending soon.
    db.execute("INSERT INTO loyalty_monitoring.silences (check_id, starts_at, ends_at, reason, author)"
               " VALUES ('email_failure_rate', %s, %s, 'SMTP migration', 'alice')", (T - H, T + 2 * 24 * H))
    dr, states = run_dag("loyalty_p2_checks", T)
    [digest] = [r["body"] for r in sink.take("/slack/reports")]
    section = next(b["text"]["text"] for b in digest["blocks"] if "Alert quality, last 7 days" in str(b))
    assert "`rate_limit_spikes`: 0 pages, 3 flaps, 9 notifications, 4 episodes" in section
    assert "🔕 `email_failure_rate` silence ends 2026-11-25 08:00 UTC" in section


def test_set_changes_the_prediction_as_the_lifecycle_says_beside_the_current_catalog(db):
    build_history(db)
    current = run_backtest("rate_limit_spikes", START, T, {}, db)
    higher = run_backtest("rate_limit_spikes", START, T, {"threshold": "125"}, db)
    # > 125: store 11 never fires; store 10 at 150 (h2), 130 (h5), 200-200-120 (h9-h11: 120 is clean).
    assert by_hour(higher) == {2: [("trigger", ["10"])], 3: [("resolve", ["10"])], 5: [("trigger", ["10"])],
                               6: [("resolve", ["10"])], 9: [("trigger", ["10"])], 11: [("resolve", ["10"])]}
    assert higher["settings"]["threshold"] == 125 and higher["baseline"]["settings"]["threshold"] == 100
    assert {k: higher["baseline"][k] for k in ("settings", "notifications", "episodes", "summary")} == {
        k: current[k] for k in ("settings", "notifications", "episodes", "summary")}

    pending = run_backtest("rate_limit_spikes", START, T, ["for_runs=2"], db)
    # Two breaching hours in a row before firing: only h2-h3 and h9-h10 of store 10 qualify;
    # store 11 (h3, h7) and store 10 at h5 stay pending and fall back without a word.
    assert by_hour(pending) == {3: [("trigger", ["10"])], 4: [("resolve", ["10"])],
                                10: [("trigger", ["10"])], 12: [("resolve", ["10"])]}
    assert pending["summary"]["flaps"] == 0 and pending["baseline"]["summary"] == current["summary"]

    reminders = run_backtest("rate_limit_spikes", START, T, {"repeat_after": "1h", "threshold": "150"}, db)
    # > 150: store 10 fires at h9 (200), still at h10 (200): a reminder an hour later, resolves at h11.
    assert by_hour(reminders) == {9: [("trigger", ["10"])], 10: [("reminder", ["10"])], 11: [("resolve", ["10"])]}


def test_sweep_matches_single_runs_and_measures_each_t_once(db):
    build_history(db)
    calls: list[tuple[int, int]] = []
    swept = run_backtest("rate_limit_spikes", START, T, {}, db, sweep="threshold=100:160:20",
                         progress=lambda done, total: calls.append((done, total)))
    assert [s["value"] for s in swept["sweep"]] == [100, 120, 140, 160]
    for candidate in swept["sweep"]:
        single = run_backtest("rate_limit_spikes", START, T, {"threshold": str(candidate["value"])}, db)
        assert candidate["summary"] == single["summary"], candidate["value"]
    assert calls[-1] == (12, 12)  # one evaluation of the SQL per T for all four candidates
    assert swept["summary"] == run_backtest("rate_limit_spikes", START, T, {}, db)["summary"]

    windows = run_backtest("rate_limit_spikes", START, T, {}, db, sweep="window=1h:2h:1h",
                           progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (24, 24)  # the window changes the SQL's parameters: measured per candidate
    assert [s["value"] for s in windows["sweep"]] == ["1h", "2h"]
    assert windows["sweep"][0]["summary"] == swept["summary"]


def test_a_failing_evaluation_is_an_error_event_not_a_crash(db):
    db.execute("DROP TABLE rate_limit_events CASCADE")
    result = run_backtest("rate_limit_spikes", START, T, {}, db)
    assert result["evaluations"] == 12 and result["errors"] == 12
    assert [(hour(n["t"]), n["event"], n["channels"]) for n in result["notifications"]] == [(1, "error", ["slack"])]
    assert result["summary"]["episodes"] == 0


def test_cli_writes_the_spec_json_and_a_plot(db, pg, loyalty_db, tmp_path):
    build_history(db)
    out, png = tmp_path / "bt.json", tmp_path / "bt.png"
    proc = subprocess.run(
        [sys.executable, "-m", "loyalty_checks.backtest", "--check", "rate_limit_spikes", "--start", START.isoformat(),
         "--end", T.isoformat(), "--set", "threshold=125", "--dsn", pg.conninfo(loyalty_db), "--json", str(out),
         "--plot", str(png)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")}, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {"check", "start", "end", "settings", "evaluations", "errors", "notifications", "episodes", "summary",
            "baseline"} <= set(data)
    assert data["notifications"][0] == {"t": (START + 2 * H).isoformat(), "event": "trigger", "channels": ["slack"],
                                        "entities": ["10"]}
    assert data["summary"]["notifications"] == 6 and data["baseline"]["summary"]["notifications"] == 9
    assert "series" not in data
    expected = without_series(run_backtest("rate_limit_spikes", START, T, {"threshold": "125"}, db))
    assert {k: v for k, v in data.items() if k != "seconds"} == {k: v for k, v in expected.items() if k != "seconds"}
    assert "current catalog" in proc.stdout and "with --set" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_plot_needs_the_series():
    with pytest.raises(ValueError, match="series"):
        plot_png({"notifications": []}, "/dev/null")


@pytest.mark.parametrize(("args", "named"), [
    (["--check", "no_such_check"], "no_such_check"),
    (["--check", "rate_limit_spikes", "--set", "thresold=5"], "thresold"),
    (["--check", "rate_limit_spikes", "--set", "for_runs=0"], "for_runs"),
    (["--check", "rate_limit_spikes", "--start", "2026-11-23T08:00:00+00:00", "--end", "2026-11-22T08:00:00+00:00"],
     "not after --start"),
    (["--check", "rate_limit_spikes", "--end", "tomorrow"], "--end"),
    (["--check", "rate_limit_spikes", "--sweep", "threshold=200:80:10"], "--sweep threshold"),
    (["--check", "rate_limit_spikes", "--sweep", "title=1:2:1"], "title"),
])
def test_bad_input_exits_2_naming_it(args, named):
    base = {"--start": "2026-11-22T08:00:00+00:00", "--end": "2026-11-23T08:00:00+00:00"}
    for flag, value in base.items():
        if flag not in args:
            args = [*args, flag, value]
    proc = subprocess.run([sys.executable, "-m", "loyalty_checks.backtest", *args, "--dsn", "postgresql://nowhere:1/x"],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")}, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr


def test_library_rejects_bad_input_before_any_query():
    with pytest.raises(BacktestError, match="params"):
        run_backtest("rate_limit_spikes", START, T, {"params.nope": "1"}, conn=None)
    with pytest.raises(BacktestError, match="FIELD=VALUE"):
        run_backtest("rate_limit_spikes", START, T, ["threshold"], conn=None)


def test_backtest_dag_stores_json_and_png(db, dagbag, airflow_conns, pg, loyalty_db):
    build_history(db)
    dag = dagbag.get_dag("loyalty_backtest")
    dr = dag.test(run_conf={"check": "rate_limit_spikes", "start": START.isoformat(), "end": T.isoformat(),
                            "overrides": "threshold=125\n\nfor_runs=1", "requested_by": "alice"})
    assert dr.state == "success"
    row = db.execute("SELECT check_id, requested_by, request, result, plot FROM loyalty_monitoring.backtests").fetchone()
    check_id, who, request, result, plot = row
    assert (check_id, who) == ("rate_limit_spikes", "alice")
    assert request["overrides"] == {"threshold": "125", "for_runs": "1"}
    assert request["run_id"] == dr.run_id  # how the console finds the result of the run it triggered
    assert result["summary"]["notifications"] == 6 and result["baseline"]["summary"]["notifications"] == 9
    assert bytes(plot[:8]) == b"\x89PNG\r\n\x1a\n"

    bad = dag.test(run_conf={"check": "rate_limit_spikes", "start": "last week", "end": ""})
    assert bad.state == "failed"
    assert db.execute("SELECT count(*) FROM loyalty_monitoring.backtests").fetchone()[0] == 1


def test_tally_counts_as_the_spec_defines():
    from loyalty_checks.quality import Tally

    tally = Tally(H)
    page = {"event": "trigger", "channels": ["slack", "pagerduty"], "entities": []}
    steps = {1: ("firing", [page]), 2: ("ok", [{"event": "resolve", "channels": ["pagerduty", "slack"]}]),
             3: ("pending", []), 4: ("firing", [page]), 5: ("ok", []), 6: ("ok", []), 7: ("ok", []),
             8: ("firing", [page]), 9: ("firing", [{"event": "error", "channels": ["slack"]}])}
    for h, (status, notes) in steps.items():
        tally.add(START + h * H, status, error=h == 9, notifications=notes)
    summary = tally.summary()
    # episodes 1-2, 4-5 (starts 2 intervals after the last ended: a flap), 8- (3 intervals after: not one)
    assert [(hour(e["start"]), e["end"] and hour(e["end"])) for e in tally.episodes_json()] == [(1, 2), (4, 5), (8, None)]
    assert summary | {"noisiest": None} == {
        "notifications": 5, "pages": 4, "episodes": 3, "flaps": 1, "firing_share": round(4 / 9, 4),
        "median_resolve_seconds": 3600.0, "longest_resolve_seconds": 3600.0, "errors": 1, "evaluations": 9,
        "noisiest": None}
    assert tally.notifications[1]["channels"] == ["pagerduty", "slack"]  # the page first, as sent
