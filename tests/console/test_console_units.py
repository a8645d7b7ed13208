"""The console's parts that need no server: the plugin import is cheap and touches no
database, and the chart marks what it should and keeps spikes when it thins a year out."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

UTC = dt.timezone.utc


def test_importing_the_plugin_is_cheap_and_touches_no_database(tmp_path):
    probe = f"""
import json, sys, time
import airflow.plugins_manager  # what every Airflow component has loaded already
start = time.process_time()  # CPU time: what the import costs, not what other processes take of the machine
import importlib.util
spec = importlib.util.spec_from_file_location("loyalty_console_plugin", {str(ROOT / "plugins" / "loyalty_console_plugin.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.process_time() - start
from loyalty_checks import connections
print(json.dumps({{"seconds": elapsed, "psycopg": "psycopg" in sys.modules, "schema_ready": bool(connections._schema_ready),
                  "plugin": module.LoyaltyConsolePlugin.name}}))
"""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path),
           # Unreachable on purpose: an import that connected would hang or fail.
           "AIRFLOW_CONN_LOYALTY_DB": "postgresql://nobody@10.255.255.1:1/none",
           "AIRFLOW_CONN_LOYALTY_MONITORING_DB": "postgresql://nobody@10.255.255.1:1/none",
           "PYTHONPATH": str(ROOT / "plugins")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["plugin"] == "loyalty_console"
    assert report["psycopg"] is False and report["schema_ready"] is False
    assert report["seconds"] < 2.0, report  # CPU seconds, not wall time: other work on the machine does not count


def _history(evals, notes=(), silences=()):
    return {"evaluations": list(evals), "notifications": list(notes), "silences": list(silences)}


def _eval(t, value, status="ok", alert="ok", error=None):
    return {"t": t.isoformat(), "value": value, "status": status, "alert_status": alert, "error": error}


def test_chart_marks_firing_notifications_silences_and_errors():
    from loyalty_checks.console import chart

    t0 = dt.datetime(2026, 11, 20, tzinfo=UTC)
    evals = [_eval(t0 + dt.timedelta(hours=i), v, s, a) for i, (v, s, a) in enumerate(
        [(10, "ok", "ok"), (150, "firing", "firing"), (160, "firing", "firing"), (None, "error", "firing"),
         (20, "ok", "ok")])]
    evals[3]["error"] = "timeout <b>"
    drawing = chart.build(_history(
        evals,
        notes=[{"t": evals[1]["t"], "event": "trigger", "channels": ["slack"]},
               {"t": evals[4]["t"], "event": "resolve", "channels": []}],
        silences=[{"id": 3, "starts_at": (t0 - dt.timedelta(days=1)).isoformat(),
                   "ends_at": (t0 + dt.timedelta(hours=2)).isoformat(), "author": "a", "reason": "r",
                   "entity_id": "7"}]),
        threshold=100, recovery=None, since=t0, until=t0 + dt.timedelta(hours=4))
    assert len(drawing["segments"]) == 2  # the error breaks the line
    assert [n["event"] for n in drawing["notifications"]] == ["trigger", "resolve"]
    assert "not sent" in drawing["notifications"][1]["title"]
    assert len(drawing["errors"]) == 1 and "timeout <b>" in drawing["errors"][0]["title"]  # escaped by Jinja
    assert len(drawing["firing"]) == 1
    firing = drawing["firing"][0]
    assert firing["x"] == chart.LEFT + 0.25 * (chart.WIDTH - chart.LEFT - chart.RIGHT)
    [silence] = drawing["silences"]
    assert silence["x"] == chart.LEFT  # clipped to the window
    assert "entity 7" in silence["title"]
    assert drawing["top"] <= drawing["threshold_y"] <= drawing["bottom"]


def test_chart_thins_a_year_but_keeps_the_spike():
    from loyalty_checks.console import chart

    t0 = dt.datetime(2025, 11, 29, tzinfo=UTC)
    evals = [_eval(t0 + dt.timedelta(minutes=5 * i), 10.0) for i in range(105_120)]
    evals[50_000]["value"] = 999.0
    drawing = chart.build(_history(evals), threshold=100, recovery=None, since=t0,
                          until=t0 + dt.timedelta(days=365))
    points = " ".join(drawing["segments"]).split()
    assert len(points) <= 2 * (chart.WIDTH - chart.LEFT - chart.RIGHT) + 2
    ys = [float(p.split(",")[1]) for p in points]
    assert min(ys) < drawing["threshold_y"]  # the spike above the threshold is still drawn
    assert drawing["dots"] == []


def test_the_consoles_silenced_is_the_lifecycles_at_the_request_time():
    """service marks an alert silenced exactly when lifecycle.silence_covers says so at t
    (the function decide() uses), a silence active exactly when lifecycle.silence_active does:
    not before it starts, not from the moment it ends, a whole-check silence covers every key."""
    from loyalty_checks import lifecycle
    from loyalty_checks.console import service

    t0 = dt.datetime(2026, 11, 20, 12, tzinfo=UTC)
    hour = dt.timedelta(hours=1)
    silences = [
        lifecycle.Silence(1, "c", "10", t0 + hour, "a", "entity 10, in force", starts_at=t0 - hour),
        lifecycle.Silence(2, "c", None, t0 + 3 * hour, "a", "whole check, planned", starts_at=t0 + 2 * hour),
        lifecycle.Silence(3, "c", "11", t0, "a", "entity 11, ended at t0", starts_at=t0 - 2 * hour),
        lifecycle.Silence(4, "other", None, t0 + hour, "a", "another check", starts_at=t0 - hour),
    ]
    keys = ["10", "11", "12", lifecycle.SCALAR]
    for t in [t0 - 2 * hour, t0 - hour, t0, t0 + hour, t0 + 2 * hour, t0 + 3 * hour]:
        covering = service._Covering(silences, t)
        for key in keys:
            expected = [s.id for s in silences if s.check_id == "c" and lifecycle.silence_covers(s, key, t)]
            assert covering.ids("c", key) == expected, (t, key)
    at = service._Covering(silences, t0)
    assert at.ids("c", "10") == [1] and at.ids("c", "11") == [] and at.ids("c", "12") == []
    later = service._Covering(silences, t0 + 2 * hour)
    assert later.ids("c", "12") == [2] and later.ids("c", lifecycle.SCALAR) == [2]
    assert [lifecycle.silence_active(s, t0) for s in silences] == [True, False, False, True]


def test_decide_and_the_console_share_silence_coverage():
    """decide() quiets an alert only while a silence covers it at T: an ended silence handed
    to it by mistake does not quiet a trigger."""
    from loyalty_checks import lifecycle
    from loyalty_checks.catalog import catalog

    check = catalog().check("rate_limit_spikes")
    t = dt.datetime(2026, 11, 20, 12, tzinfo=UTC)
    ended = lifecycle.Silence(1, check.id, None, t, "a", "ended at T", starts_at=t - dt.timedelta(hours=1))
    in_force = lifecycle.Silence(2, check.id, None, t + dt.timedelta(hours=1), "a", "r", starts_at=t)
    state = lifecycle.initial_state()
    for _ in range(check.for_runs - 1):
        state = lifecycle.decide(check, state, _breach(check), [], t - dt.timedelta(minutes=1)).state
    loud = lifecycle.decide(check, state, _breach(check), [ended], t)
    quiet = lifecycle.decide(check, state, _breach(check), [in_force], t)
    assert [str(n.event) for n in loud.notifications] == ["trigger"]
    assert quiet.notifications == []


def _breach(check):
    from loyalty_checks.evaluate import evaluate

    value = check.threshold * 2 if check.comparison in (">", ">=") else check.threshold / 2
    return evaluate(check, {"value": None, "details": {}, "entities": [
        {"id": "10", "name": "store 10", "value": value}]})
