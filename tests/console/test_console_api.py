"""The alert console's JSON API and pages against a real `airflow api-server` (conftest.py):
the plugin is registered, nobody reaches anything without signing in, a viewer reads but
cannot write, an admin adds and expires silences as themselves, every bad value is a 400
naming its field, cross-site form posts are refused, and the pages escape database text.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from loyalty_checks.catalog import catalog
from tests.console.seed import CHECK, HOSTILE, P1

pytestmark = pytest.mark.console


def until_in(hours: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)).isoformat()


@pytest.fixture(scope="module")
def anonymous(console):
    with console.client() as c:
        yield c


# ---------------------------------------------------------------- where

def test_plugin_registers_the_app_and_the_views(admin):
    r = admin.get("/api/v2/plugins")
    assert r.status_code == 200, r.text
    [plugin] = [p for p in r.json()["plugins"] if p["name"] == "loyalty_console"]
    assert plugin["fastapi_apps"] == [{"app": plugin["fastapi_apps"][0]["app"], "url_prefix": "/loyalty",
                                       "name": "Loyalty alerts console"}]
    views = {v["url_route"]: v for v in plugin["external_views"]}
    assert views["loyalty-alerts"]["name"] == "Loyalty alerts"
    assert views["loyalty-alerts"]["href"] == "loyalty/" and views["loyalty-alerts"]["destination"] == "nav"
    assert views["loyalty-dag-alerts"]["destination"] == "dag"
    assert "{DAG_ID}" in views["loyalty-dag-alerts"]["href"]


# ---------------------------------------------------------------- who

API_PATHS = [("GET", "/loyalty/api/alerts"), ("GET", "/loyalty/api/checks"),
             ("GET", f"/loyalty/api/checks/{CHECK}/history"), ("GET", "/loyalty/api/silences"),
             ("POST", "/loyalty/api/silences"), ("DELETE", "/loyalty/api/silences/1"),
             ("GET", "/loyalty/api/openapi.json"), ("GET", "/loyalty/api/nope")]


@pytest.mark.parametrize(("method", "path"), API_PATHS)
def test_api_answers_401_without_a_token(anonymous, method, path):
    r = anonymous.request(method, path, json={"check_id": CHECK, "reason": "x", "duration": "1h"}
                          if method == "POST" else None)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert "Not authenticated" in r.json()["detail"]


def test_api_answers_401_with_a_forged_token(console):
    with console.client() as c:
        r = c.get("/loyalty/api/alerts", headers={"Authorization": "Bearer " + "e30.e30.sig"})
        assert r.status_code == 401
        r = c.get("/loyalty/api/alerts", cookies={"_token": "forged"})
        assert r.status_code == 401


@pytest.mark.parametrize("path", ["/loyalty/", f"/loyalty/checks/{CHECK}", "/loyalty/silences",
                                  "/loyalty/anything"])
def test_pages_redirect_to_airflow_login_without_a_session(console, anonymous, path):
    r = anonymous.get(path + "?x=1")
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert location.path == "/airflow/api/v2/auth/login"  # under the base_url's sub-path
    assert parse_qs(location.query)["next"] == [f"/airflow{path}?x=1"]  # a path: no host from the request
    # ... and Airflow's login accepts that next URL (same origin) and sends us to its login page.
    follow = anonymous.get(r.headers["location"].removeprefix("/airflow"))
    assert follow.status_code in (302, 307), follow.text
    assert "login" in follow.headers["location"]


def test_the_console_without_its_slash_redirects_to_it(anonymous):
    r = anonymous.get("/loyalty?dag_id=x")
    assert r.status_code == 307 and r.headers["location"] == "/airflow/loyalty/?dag_id=x"
    assert anonymous.get("/loyaltyx").status_code != 307  # only that path


def test_pages_accept_the_ui_cookie(console):
    with console.client() as c:
        r = c.get("/loyalty/", cookies={"_token": console.token("viewer")})
        assert r.status_code == 200
        assert "signed in as <b>viewer</b> (read only)" in r.text


# ---------------------------------------------------------------- reading, as a viewer

def test_viewer_sees_the_firing_stores_with_their_last_notification(console, viewer):
    r = viewer.get("/loyalty/api/alerts")
    assert r.status_code == 200, r.text
    alerts = [a for a in r.json()["alerts"] if a["check_id"] == CHECK]
    assert [(a["entity_id"], a["state"], a["value"]) for a in alerts] == [("10", "firing", 150.0),
                                                                          ("12", "firing", 101.0)]
    first = alerts[0]
    t = console.seed["t"]
    assert first["entity_name"] == HOSTILE  # JSON carries the text as it is
    assert first["severity"] == "P1" and first["title"] == "Rate limit spikes" and first["threshold"] == 100
    assert dt.datetime.fromisoformat(first["since"]) == t
    assert first["silenced"] is False
    assert first["runbook_url"] == catalog().runbook_link(CHECK)
    assert first["last_notification"]["event"] == "trigger"
    assert first["last_notification"]["channels"] == ["slack"]
    assert dt.datetime.fromisoformat(first["last_notification"]["t"]) == t
    assert first["run_path"] == f"dags/{P1}/runs/{quote(console.seed['run_id'], safe='')}"
    # What the API calls the last notification is what Slack received.
    [slack] = console.seed["slack"][-1:]
    assert slack["text"].startswith("[P1] FIRING: Rate limit spikes")
    assert r.json()["total"] == len(r.json()["alerts"])


def test_run_links_point_at_the_real_runs(console, viewer, admin):
    [alert, _] = [a for a in viewer.get("/loyalty/api/alerts").json()["alerts"] if a["check_id"] == CHECK]
    dag_id, _, run_id = alert["run_path"].removeprefix("dags/").partition("/runs/")
    r = admin.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")  # the path Airflow's UI shows, as its API sees it
    assert r.status_code == 200, r.text
    assert r.json()["dag_run_id"] == console.seed["run_id"]


def test_alerts_put_p0_first_and_filter(viewer, console):
    order = {"P0": 0, "P1": 1, "P2": 2}
    alerts = viewer.get("/loyalty/api/alerts").json()["alerts"]
    assert [order[a["severity"]] for a in alerts] == sorted(order[a["severity"]] for a in alerts)
    page = viewer.get("/loyalty/api/alerts", params={"check_id": CHECK, "limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and [a["entity_id"] for a in page["alerts"]] == ["12"]
    assert viewer.get("/loyalty/api/alerts", params={"severity": "P0"}).json()["alerts"] == []


def test_viewer_gets_every_catalog_check(viewer):
    r = viewer.get("/loyalty/api/checks")
    assert r.status_code == 200
    checks = {c["check_id"]: c for c in r.json()["checks"]}
    assert list(checks) == [c.id for c in catalog().checks]
    spikes = checks[CHECK]
    assert spikes["status"] == "firing" and spikes["value"] == 150.0 and spikes["threshold"] == 100
    assert spikes["error"] is None and spikes["last_t"] is not None
    assert checks["high_churn"]["status"] is None  # never evaluated: listed all the same


def test_viewer_gets_the_history(console, viewer):
    t = console.seed["t"]
    since = (t - dt.timedelta(hours=31)).isoformat()
    r = viewer.get(f"/loyalty/api/checks/{CHECK}/history", params={"since": since})
    assert r.status_code == 200, r.text
    body = r.json()
    hours = [(dt.datetime.fromisoformat(e["t"]) - t) / dt.timedelta(hours=1) for e in body["evaluations"]]
    assert hours == [-30, -29, -3, -2, -1, 0]
    assert [e["status"] for e in body["evaluations"]] == ["firing", "no_data", "no_data", "no_data", "no_data", "firing"]
    assert [e["alert_status"] for e in body["evaluations"]] == ["firing", "ok", "ok", "ok", "ok", "firing"]
    assert [(n["event"], n["channels"]) for n in body["notifications"]] == [
        ("trigger", ["slack"]), ("resolve", ["slack"]), ("trigger", ["slack"])]
    later = viewer.get(f"/loyalty/api/checks/{CHECK}/history",
                       params={"since": (t - dt.timedelta(minutes=30)).isoformat()}).json()
    assert len(later["evaluations"]) == 1


def test_history_of_an_unknown_check_is_404(viewer):
    r = viewer.get("/loyalty/api/checks/no_such_check/history")
    assert r.status_code == 404 and "no_such_check" in r.json()["detail"]


@pytest.mark.parametrize(("params", "field"), [({"since": "yesterday"}, "since"), ({"since": "2026-11-01T00:00"}, "since"),
                                               ({"limit": "0"}, "limit"), ({"until": "x"}, "until")])
def test_history_rejects_bad_values_naming_the_field(viewer, params, field):
    r = viewer.get(f"/loyalty/api/checks/{CHECK}/history", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(f"{field}: ")


def test_alerts_reject_bad_filters_naming_the_field(viewer):
    for params, field in (({"severity": "P9"}, "severity"), ({"limit": "-1"}, "limit"),
                          ({"check_id": "nope"}, "check_id"), ({"state": "asleep"}, "state")):
        r = viewer.get("/loyalty/api/alerts", params=params)
        assert (r.status_code, r.json()["field"]) == (400, field), r.text


def test_viewer_may_not_add_or_expire_a_silence(viewer, admin):
    r = viewer.post("/loyalty/api/silences", json={"check_id": CHECK, "duration": "1h", "reason": "viewer"})
    assert r.status_code == 403, r.text
    assert "loyalty_silences" in r.json()["detail"]
    r = viewer.post("/loyalty/api/silences", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 403  # permission first, whatever the body
    added = admin.post("/loyalty/api/silences", json={"check_id": CHECK, "duration": "1h", "reason": "r"}).json()
    assert viewer.delete(f"/loyalty/api/silences/{added['id']}").status_code == 403
    assert admin.delete(f"/loyalty/api/silences/{added['id']}").status_code == 200
    assert not any(s["reason"] == "viewer" for s in viewer.get("/loyalty/api/silences").json()["silences"])


# ---------------------------------------------------------------- silences, as an admin

def test_admin_adds_lists_and_expires_a_silence_as_themselves(admin, viewer):
    r = admin.post("/loyalty/api/silences", json={
        "check_id": CHECK, "entity_id": 10, "duration": "2h", "reason": "load test of store 10",
        "author": "mallory"})
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["author"] == "admin"  # never the body's
    assert silence["entity_id"] == "10" and silence["check_id"] == CHECK
    length = dt.datetime.fromisoformat(silence["ends_at"]) - dt.datetime.fromisoformat(silence["starts_at"])
    assert length == dt.timedelta(hours=2)

    listed = viewer.get("/loyalty/api/silences").json()["silences"]
    assert silence["id"] in [s["id"] for s in listed]
    alerts = {a["entity_id"]: a for a in viewer.get("/loyalty/api/alerts", params={"check_id": CHECK}).json()["alerts"]}
    assert alerts["10"]["silenced"] is True and alerts["12"]["silenced"] is False

    assert admin.delete(f"/loyalty/api/silences/{silence['id']}").status_code == 200
    assert admin.delete(f"/loyalty/api/silences/{silence['id']}").status_code == 404
    assert silence["id"] not in [s["id"] for s in viewer.get("/loyalty/api/silences").json()["silences"]]
    alerts = {a["entity_id"]: a for a in viewer.get("/loyalty/api/alerts", params={"check_id": CHECK}).json()["alerts"]}
    assert alerts["10"]["silenced"] is False


def test_admin_adds_a_planned_silence_until_a_time(admin):
    starts = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    until = starts + dt.timedelta(hours=3)
    r = admin.post("/loyalty/api/silences", json={"check_id": "google_wallet_down", "starts_at": starts.isoformat(),
                                                  "until": until.isoformat(), "reason": "Google maintenance"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert dt.datetime.fromisoformat(body["starts_at"]) == starts
    assert dt.datetime.fromisoformat(body["ends_at"]) == until
    assert body["entity_id"] is None
    assert admin.delete(f"/loyalty/api/silences/{body['id']}").status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"check_id": "no_such_check", "duration": "1h", "reason": "r"}, "check_id"),
    ({"duration": "1h", "reason": "r"}, "check_id"),
    ({"check_id": CHECK, "duration": "1h"}, "reason"),
    ({"check_id": CHECK, "duration": "1h", "reason": "   "}, "reason"),
    ({"check_id": CHECK, "duration": "soon", "reason": "r"}, "duration"),
    ({"check_id": CHECK, "duration": "400d", "reason": "r"}, "duration"),
    ({"check_id": CHECK, "reason": "r"}, "duration"),
    ({"check_id": CHECK, "duration": "1h", "until": "2099-01-01T00:00Z", "reason": "r"}, "duration"),
    ({"check_id": CHECK, "until": "2020-01-01T00:00Z", "reason": "r"}, "until"),
    ({"check_id": CHECK, "until": "2099-01-01T00:00", "reason": "r"}, "until"),
    ({"check_id": CHECK, "duration": "1h", "starts_at": "tomorrow", "reason": "r"}, "starts_at"),
    ({"check_id": CHECK, "entity_id": ["10"], "duration": "1h", "reason": "r"}, "entity_id"),
    ({"check_id": CHECK, "entity_id": "x" * 201, "duration": "1h", "reason": "r"}, "entity_id"),
])
def test_bad_silences_are_400_naming_the_field(admin, body, field):
    r = admin.post("/loyalty/api/silences", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.json()
    assert r.json()["detail"].startswith(f"{field}: ")


def test_unknown_check_message_lists_the_known_ones(admin):
    r = admin.post("/loyalty/api/silences", json={"check_id": "nope", "duration": "1h", "reason": "r"})
    assert r.status_code == 400
    assert "unknown check 'nope'" in r.json()["detail"] and CHECK in r.json()["detail"]


def test_a_silence_body_must_be_json(admin):
    r = admin.post("/loyalty/api/silences", content=b"check_id=x", headers={"content-type": "text/plain"})
    assert (r.status_code, r.json()["field"]) == (400, "body")
    r = admin.post("/loyalty/api/silences", content=b"{", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["field"]) == (400, "body")


def test_expiring_rejects_a_bad_id(admin):
    r = admin.delete("/loyalty/api/silences/abc")
    assert (r.status_code, r.json()["field"]) == (400, "silence_id")
    assert admin.delete("/loyalty/api/silences/999999").status_code == 404


# ---------------------------------------------------------------- cross-site requests (cookie sessions)

def test_cookie_writes_need_this_origin(console):
    cookie = {"_token": console.token("admin")}
    body = {"check_id": CHECK, "duration": "1h", "reason": "csrf"}
    with console.client() as c:
        c.cookies.update(cookie)
        assert c.post("/loyalty/api/silences", json=body).status_code == 403  # no Origin, no Referer
        evil = c.post("/loyalty/api/silences", json=body, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "cross-site" in evil.json()["detail"]
        ok = c.post("/loyalty/api/silences", json=body, headers={"Origin": console.url.rsplit("/airflow", 1)[0]})
        assert ok.status_code == 201, ok.text
        assert c.delete(f"/loyalty/api/silences/{ok.json()['id']}",
                        headers={"Referer": console.url + "/loyalty/silences"}).status_code == 200


def _form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_the_silence_form_needs_its_token_and_this_origin(console):
    origin = console.url.rsplit("/airflow", 1)[0]
    with console.client() as c:
        c.cookies.update({"_token": console.token("admin")})
        page = c.get("/loyalty/silences", params={"check_id": CHECK, "entity_id": "12"})
        assert page.status_code == 200
        assert f'<option value="{CHECK}" selected>' in page.text and 'value="12"' in page.text
        form = {"check_id": CHECK, "entity_id": "12", "end": "duration", "duration": "30m", "reason": "form test",
                "author": "mallory"}
        assert c.post("/loyalty/silences", data=form, headers={"Origin": origin}).status_code == 403  # no token
        assert c.post("/loyalty/silences", data={**form, "csrf_token": "1.forged"},
                      headers={"Origin": origin}).status_code == 403
        token = _form_token(page.text)
        assert c.post("/loyalty/silences", data={**form, "csrf_token": token},
                      headers={"Origin": "https://evil.example"}).status_code == 403
        bad = c.post("/loyalty/silences", data={**form, "duration": "forever", "csrf_token": token},
                     headers={"Origin": origin})
        assert bad.status_code == 400 and 'data-field="duration"' in bad.text
        added = c.post("/loyalty/silences", data={**form, "csrf_token": token}, headers={"Origin": origin})
        assert added.status_code == 303, added.text
        assert added.headers["location"].startswith("silences?added=")  # relative: works under any base path
        sid = int(added.headers["location"].split("=")[1])
        listed = c.get("/loyalty/silences?" + added.headers["location"].split("?")[1])
        assert f"Silence #{sid} added." in listed.text
        row = re.search(rf'<tr class="silence-row" data-id="{sid}".*?</tr>', listed.text, re.S).group(0)
        assert "<td>admin</td>" in row and "mallory" not in row
        expired = c.post(f"/loyalty/silences/{sid}/expire", data={"csrf_token": token}, headers={"Origin": origin})
        assert expired.status_code == 303 and expired.headers["location"] == f"../../silences?expired={sid}"


def test_a_viewer_gets_no_form_and_cannot_post_it(console):
    origin = console.url.rsplit("/airflow", 1)[0]
    with console.client() as c:
        c.cookies.update({"_token": console.token("viewer")})
        page = c.get("/loyalty/silences")
        assert page.status_code == 200 and 'id="add-silence"' not in page.text
        r = c.post("/loyalty/silences", data={"check_id": CHECK, "duration": "1h", "reason": "x",
                                              "csrf_token": _form_token_for_viewer(page.text)},
                   headers={"Origin": origin})
        assert r.status_code == 403


def _form_token_for_viewer(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    return match.group(1) if match else ""


# ---------------------------------------------------------------- pages

def test_alerts_page_shows_the_firing_check_escaped(console):
    with console.client() as c:
        c.cookies.update({"_token": console.token("viewer")})
        r = c.get("/loyalty/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    rows = re.findall(r'<tr class="alert" data-check="([^"]+)" data-entity="([^"]*)"', html)
    assert rows == [(CHECK, "10"), (CHECK, "12")]
    assert "<script>alert(" not in html and "<b>Co</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Burger &amp; &lt;b&gt;Co&lt;/b&gt;" in html
    assert f'href="{catalog().runbook_link(CHECK)}"' in html
    assert f'href="./../dags/{P1}/runs/{quote(console.seed["run_id"], safe="")}"' in html  # relative: sub-path safe
    assert "trigger → slack" in html
    assert 'href="./checks/rate_limit_spikes"' in html


def test_dag_tab_shows_that_dags_checks(console):
    with console.client() as c:
        c.cookies.update({"_token": console.token("viewer")})
        p0 = c.get("/loyalty/", params={"dag_id": "loyalty_p0_checks"}).text
        other = c.get("/loyalty/", params={"dag_id": "some_other_dag"}).text
    assert 'data-check="rate_limit_spikes"' not in p0 and 'data-check="expiration_task_stale"' in p0
    assert "The DAG some_other_dag runs no loyalty checks." in other


def test_check_page_draws_the_chart_and_timeline(console):
    with console.client() as c:
        c.cookies.update({"_token": console.token("viewer")})
        r = c.get(f"/loyalty/checks/{CHECK}", params={"days": 7})
        assert r.status_code == 200, r.text
        html = r.text
        assert '<svg class="chart" id="chart"' in html and '<polyline class="value"' in html
        assert html.count('class="notification-mark"') == 3
        assert 'class="threshold"' in html and html.count('class="firing-band"') == 2
        assert "trigger sent to slack" in html and "resolve sent to slack" in html
        assert 'href="../silences"' in html and 'href="../"' in html  # relative, one level down
        assert c.get(f"/loyalty/checks/{CHECK}", params={"days": 3}).status_code == 400
        missing = c.get("/loyalty/checks/nope")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_a_hostile_silence_reason_is_shown_as_text(console, admin):
    reason = '<img src=x onerror="alert(1)"> & </td><script>alert(2)</script>'
    r = admin.post("/loyalty/api/silences", json={"check_id": CHECK, "entity_id": "12", "duration": "1h",
                                                  "reason": reason})
    assert r.status_code == 201 and r.json()["reason"] == reason
    try:
        for path in ("/loyalty/silences", f"/loyalty/checks/{CHECK}"):
            html = admin.get(path).text
            assert "<img src=x" not in html and "<script>alert(2)" not in html, path
            assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; &lt;/td&gt;&lt;script&gt;" in html, path
    finally:
        admin.delete(f"/loyalty/api/silences/{r.json()['id']}")


def test_pages_send_protective_headers(console):
    with console.client() as c:
        c.cookies.update({"_token": console.token("viewer")})
        r = c.get("/loyalty/")
    assert "frame-ancestors 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
