"""The console's backtest form against a real `airflow api-server` (conftest.py).

Posting the form needs the right to trigger `loyalty_silences` and the form's token; a
bad value is a 400 naming the field and triggers nothing; a good one triggers a run of
the `loyalty_backtest` DAG with the form as its params and the signed-in user as its
triggering user, and redirects to the run's page (its state, a link to the run in the
Airflow UI). The run is then executed as a scheduler and a worker would
(run_triggered.py, on the api-server's metadata database, with the real `loyalty_db`);
the page then shows what the DAG stored: the figures and the plot. Through all of it the
api-server never opens a connection to `loyalty_db` (its `loyalty_db` is a proxy that
counts connections).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from loyalty_checks.catalog import catalog
from tests.console.conftest import _server_env
from tests.console.seed import CHECK

pytestmark = pytest.mark.console
ROOT = Path(__file__).resolve().parents[2]
DAG = "loyalty_backtest"


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    return match.group(1) if match else ""


def origin_of(console) -> str:
    return console.url.rsplit("/airflow", 1)[0]


def backtest_runs(console) -> dict[str, dict]:
    """The loyalty_backtest DAG's runs, by run id, from Airflow's REST API."""
    with console.client("admin") as c:
        r = c.get(f"/api/v2/dags/{DAG}/dagRuns", params={"limit": 100})
    assert r.status_code == 200, r.text
    return {run["dag_run_id"]: run for run in r.json()["dag_runs"]}


def run_triggered(console, run_id: str) -> str:
    """Execute the triggered run (no scheduler runs here): its final state."""
    port = urlsplit(console.url).port
    env = _server_env(console.home, port, console.home / "airflow.db", console.conns)  # the real loyalty_db
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins")])
    out = subprocess.run([sys.executable, "-m", "tests.console.run_triggered", DAG, run_id], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_form_triggers_the_backtest_dag_and_its_page_shows_the_stored_result(console):
    t = console.seed["t"]
    start, end = t - dt.timedelta(hours=31), t
    form = {"check_id": CHECK, "start": start.strftime("%Y-%m-%dT%H:%M"), "end": end.strftime("%Y-%m-%dT%H:%M"),
            "overrides": "threshold=120", "sweep": ""}
    headers = {"Origin": origin_of(console)}
    before = backtest_runs(console)
    with console.client() as c:
        c.cookies.update({"_token": console.token("admin")})
        page = c.get("/loyalty/backtest", params={"check_id": CHECK})
        assert page.status_code == 200 and f'<option value="{CHECK}" selected>' in page.text
        token = form_token(page.text)

        # Refused or invalid: a 403 / a 400 naming the field, and no run of the DAG.
        assert c.post("/loyalty/backtest", data=form, headers=headers).status_code == 403  # no token
        for bad, field in (({"end": form["start"]}, "end"), ({"overrides": "nope=1"}, "overrides"),
                           ({"start": "last week"}, "start"), ({"check_id": "nope"}, "check_id"),
                           ({"start": "2020-01-01T00:00"}, "end"), ({"sweep": "threshold=1"}, "sweep"),
                           ({"sweep": "nope=1:2:1"}, "sweep"), ({"overrides": "threshold=abc"}, "overrides"),
                           ({"check_id": ""}, "check_id")):
            r = c.post("/loyalty/backtest", data={**form, **bad, "csrf_token": token}, headers=headers)
            assert r.status_code in (400, 404), (bad, r.status_code)
            assert f'data-field="{field}"' in r.text or (field == "check_id" and r.status_code == 404), \
                (bad, r.text[:2000])
        assert backtest_runs(console).keys() == before.keys()

        # Valid: a queued run of loyalty_backtest with the form as params, by the signed-in user.
        r = c.post("/loyalty/backtest", data={**form, "csrf_token": token}, headers=headers)
        assert r.status_code == 303, r.text[:3000]
        location = r.headers["location"]
        assert location.startswith("backtest/runs/"), location
        run_id = unquote(location.removeprefix("backtest/runs/"))
        runs = backtest_runs(console)
        assert runs.keys() - before.keys() == {run_id}
        run = runs[run_id]
        assert (run["state"], run["run_type"], run["triggering_user_name"]) == ("queued", "manual", "admin"), run
        assert run["conf"] == {"check": CHECK, "start": start.isoformat(), "end": end.isoformat(),
                               "overrides": "threshold=120", "sweep": ""}, run["conf"]

        # Its page: the run's state, a link to it in the Airflow UI (outside the iframe), reloading.
        page = c.get(f"/loyalty/{location}")
        assert page.status_code == 200, page.text[:3000]
        assert 'id="dag-run" data-state="queued"' in page.text
        link = f'<a id="dag-run-link" href="../../../dags/{DAG}/runs/{quote(run_id, safe="")}" target="_top">'
        assert link in page.text
        assert '<meta http-equiv="refresh" content="5">' in page.text
        assert 'id="backtest-chart"' not in page.text and 'id="stored"' not in page.text
        waiting = c.get("/loyalty/backtest").text  # listed as waiting on the form page
        assert f'<a href="./backtest/runs/{quote(run_id, safe="")}">{run_id}</a>' in waiting

        # A worker runs it (read only on loyalty_db) and stores the result with the run's id.
        assert run_triggered(console, run_id) == "success"
        page = c.get(f"/loyalty/{location}")
        assert page.status_code == 200, page.text[:3000]
        assert 'id="dag-run" data-state="success"' in page.text and link in page.text
        assert "http-equiv" not in page.text
        bid = int(re.search(r"Backtest #(\d+) of <code>", page.text).group(1))
        assert f"Backtest #{bid} of <code>{CHECK}</code>" in page.text and "by admin" in page.text
        assert 'id="backtest-chart"' in page.text and "data:image/png;base64,iVBOR" in page.text
        assert "<th>current catalog</th>" in page.text and "with these settings" in page.text
        rows = re.findall(r"<tr><td class=\"num\">([^<]+)</td><td><span class=\"badge notification\">(\w+)</span>",
                          page.text)
        assert [event for _, event in rows] == ["trigger", "resolve", "trigger"]
        assert f'<a href="../../backtest/{bid}">{bid}</a>' in page.text  # among the recent ones
        assert f'<option value="{CHECK}" selected>' in page.text and "threshold=120</textarea>" in page.text
        links = re.findall(r"<a [^>]*>", page.text)  # out of the UI's iframe: Airflow at the top, runbooks in a tab
        airflow = [a for a in links if re.search(r'href="(\.\./)+dags/', a)]
        runbooks = [a for a in links if catalog().runbook_link(CHECK) in a]
        assert len(airflow) >= 2 and all('target="_top"' in a for a in airflow), airflow
        assert runbooks and all('target="_blank"' in a and "noopener" in a for a in runbooks), runbooks

        # The stored backtest at its own address, with its run.
        r = c.get(f"/loyalty/backtest/{bid}")
        assert r.status_code == 200 and f"Backtest #{bid} of <code>{CHECK}</code>" in r.text
        assert f'href="../../dags/{DAG}/runs/{quote(run_id, safe="")}" target="_top"' in r.text
        assert c.get("/loyalty/backtest/999999").status_code == 404
        assert c.get("/loyalty/backtest/runs/manual__nope").status_code == 404

    assert console.loyalty_db_proxy.accepted == 0, console.loyalty_db_proxy.events


def test_a_viewer_cannot_run_a_backtest(console):
    before = backtest_runs(console)
    with console.client() as c:
        c.cookies.update({"_token": console.token("viewer")})
        page = c.get("/loyalty/backtest")
        assert page.status_code == 200 and 'id="backtest-form"' not in page.text
        r = c.post("/loyalty/backtest", data={"check_id": CHECK, "start": "2026-11-01T00:00", "end": "2026-11-02T00:00",
                                              "csrf_token": form_token(page.text)}, headers={"Origin": origin_of(console)})
        assert r.status_code == 403
    assert backtest_runs(console).keys() == before.keys()
