"""The console tried as a hostile user would (issue 17), against the real api-server of
conftest.py: every route of the app asks who is asking and what they may do (walked from
the app's own route table, so a new route is covered without editing this file); every
odd value (NUL and control characters, times at the edges of the calendar, numbers for
times, past ends, deeply nested JSON) is a 400 naming its field and stores nothing; the
OpenAPI document says what the API really answers; HTML clients get HTML.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from loyalty_checks.catalog import catalog
from tests.console.seed import CHECK

pytestmark = pytest.mark.console

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
SAMPLE = {"check_id": CHECK}  # a value for a path parameter; any other: "999999" (an id that does not exist)


def origin(console) -> str:
    return console.url.rsplit("/airflow", 1)[0]


def _in(hours: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)).isoformat()


@pytest.fixture(scope="module")
def viewer_page(console):
    """A browser-like client of the viewer: the UI's cookie, asking for HTML."""
    with console.client() as c:
        c.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"
        c.cookies.update({"_token": console.token("viewer")})
        yield c


# ---------------------------------------------------------------- every route asks who is asking

def _routes() -> list[tuple[str, str]]:
    """(method, path inside the console) of every route of the console's app, path parameters filled."""
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    from loyalty_checks.console.app import create_app

    found = []
    for route in create_app().routes:
        if not isinstance(route, (APIRoute, Route)):
            raise AssertionError(f"a route of an unknown kind: {route!r}: teach this test how to reach it")
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLE.get(m.group(1), "999999"), route.path)
        found += [(method, path) for method in sorted(route.methods - {"HEAD"})]
    return found


ROUTES = _routes()


def test_the_walk_sees_every_kind_of_route():
    methods = {m for m, _ in ROUTES}
    assert {"GET", "POST", "DELETE"} <= methods
    assert ("POST", "/api/silences") in ROUTES and ("GET", "/") in ROUTES and ("GET", "/api/openapi.json") in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_signed_in_user(console, method, path):
    with console.client() as c:
        for how in ({}, {"headers": {"Authorization": "Bearer e30.e30.forged"}}, {"cookies": {"_token": "forged"}}):
            c.cookies.clear()
            r = c.request(method, "/loyalty" + path, json={} if method in WRITES else None,
                          headers={"Origin": origin(console), **how.get("headers", {})}, cookies=how.get("cookies"))
            if path.startswith("/api/"):
                assert r.status_code == 401, (how, r.status_code, r.text[:500])
                assert r.headers["www-authenticate"] == "Bearer" and "Not authenticated" in r.json()["detail"]
            else:
                assert r.status_code == (302 if method == "GET" else 303), (how, r.status_code, r.text[:500])
                assert urlsplit(r.headers["location"]).path == "/airflow/api/v2/auth/login"


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p in ROUTES if m in WRITES])
def test_every_write_needs_the_right_to_trigger_the_silences_dag(console, viewer, admin, pg, method, path):
    headers = {"Origin": origin(console)}
    r = viewer.request(method, "/loyalty" + path, json={"check_id": CHECK, "duration": "1h", "reason": "viewer"},
                       headers=headers)
    assert r.status_code == 403, (r.status_code, r.text[:500])
    assert "may not trigger the loyalty_silences DAG" in r.text
    # The admin passes that check (and then meets the next one: the body, the id, a form's CSRF token;
    # an acknowledgement needs none of them: it is applied, then undone for the other tests).
    r = admin.request(method, "/loyalty" + path, json={}, headers=headers)
    applied = path.startswith("/api/alerts/") and path.endswith("/ack") and r.status_code == 200
    assert applied or r.status_code in (400, 403, 404), (r.status_code, r.text[:500])
    assert "may not trigger" not in r.text
    if applied:
        with pg.connect(console.db_name, autocommit=True) as conn:
            conn.execute("UPDATE loyalty_monitoring.check_state SET lifecycle = lifecycle - 'acknowledged_by'"
                         " - 'acknowledged_at' WHERE check_id = %s", (CHECK,))
            conn.execute("DELETE FROM loyalty_monitoring.actions WHERE check_id = %s", (CHECK,))


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p in ROUTES if m not in WRITES])
def test_every_read_is_open_to_a_viewer(viewer, method, path):
    r = viewer.request(method, "/loyalty" + path)
    assert r.status_code in (200, 404), (r.status_code, r.text[:500])  # 404: the sample ids do not exist


# ---------------------------------------------------------------- silences: odd values are 400s naming the field

NESTED = 30_000  # deeper than Python's recursion limit, within the body size limit


@pytest.mark.parametrize(("body", "field"), [
    ({"check_id": CHECK, "duration": "1h", "reason": "nul \x00 inside"}, "reason"),
    ({"check_id": CHECK, "duration": "1h", "reason": "escape \x1b[31m"}, "reason"),
    ({"check_id": CHECK, "entity_id": "10\x00", "duration": "1h", "reason": "r"}, "entity_id"),
    ({"check_id": CHECK, "entity_id": "10\n11", "duration": "1h", "reason": "r"}, "entity_id"),
    ({"check_id": CHECK, "entity_id": "\x7f", "duration": "1h", "reason": "r"}, "entity_id"),
    ({"check_id": CHECK, "duration": "1h", "starts_at": "0001-01-01T00:00:00+01:00", "reason": "r"}, "starts_at"),
    ({"check_id": CHECK, "duration": "1h", "starts_at": "0001-01-01T00:00:00+00:00", "reason": "r"}, "starts_at"),
    ({"check_id": CHECK, "until": "9999-12-31T23:59:59+00:00", "reason": "r"}, "until"),
    ({"check_id": CHECK, "until": "9999-12-31T23:59:59-01:00", "reason": "r"}, "until"),
    ({"check_id": CHECK, "until": 1700000000, "reason": "r"}, "until"),
    ({"check_id": CHECK, "until": 4102444800.5, "reason": "r"}, "until"),
    ({"check_id": CHECK, "until": "4102444800", "reason": "r"}, "until"),
    ({"check_id": CHECK, "until": True, "reason": "r"}, "until"),
    ({"check_id": CHECK, "duration": "1h", "starts_at": 1700000000, "reason": "r"}, "starts_at"),
    ({"check_id": CHECK, "starts_at": _in(-3), "duration": "1h", "reason": "ended before it was added"}, "ends_at"),
    ({"check_id": CHECK, "until": _in(-0.01), "reason": "r"}, "until"),
    ({"check_id": CHECK, "duration": "99999999999999999999w", "reason": "r"}, "duration"),
    ({"check_id": CHECK, "duration": "1h", "reason": ["r"]}, "reason"),
    ({"check_id": "a\x00b", "duration": "1h", "reason": "r"}, "check_id"),
])
def test_odd_silence_values_are_400s_naming_the_field(admin, body, field):
    r = admin.post("/loyalty/api/silences", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.json()
    assert r.json()["detail"].startswith(f"{field}: "), r.json()


@pytest.mark.parametrize("content", [
    b"[" * NESTED + b"]" * NESTED,
    b'{"check_id": "x", "reason": ' + b"[" * NESTED + b"]" * NESTED + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"check_id": "' + b"x" * 200_000 + b'"}',
])
def test_deep_or_huge_json_is_a_400(admin, content):
    r = admin.post("/loyalty/api/silences", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text[:500]
    assert r.json()["field"] == "body" and r.json()["detail"].startswith("body: ")


def test_none_of_the_odd_silences_was_stored(viewer):
    reasons = {s["reason"] for s in viewer.get("/loyalty/api/silences").json()["silences"]}
    assert not {r for r in reasons if r in ("r", "ended before it was added") or "\x00" in r}


def test_a_reason_may_span_lines(admin):
    r = admin.post("/loyalty/api/silences", json={"check_id": CHECK, "duration": "1h", "reason": "line 1\nline 2\tok"})
    assert r.status_code == 201, r.text
    assert r.json()["reason"] == "line 1\nline 2\tok"
    assert admin.delete(f"/loyalty/api/silences/{r.json()['id']}").status_code == 200


def test_the_silence_form_names_the_field_too(console):
    here = origin(console)
    with console.client() as c:
        c.cookies.update({"_token": console.token("admin")})
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/loyalty/silences").text).group(1)
        form = {"check_id": CHECK, "end": "duration", "duration": "1h", "reason": "r", "csrf_token": token}
        for bad, field in (({"reason": "a\x00b"}, "reason"), ({"entity_id": "1\x002"}, "entity_id"),
                           ({"starts_at": "0001-01-01T00:00"}, "starts_at"),
                           ({"end": "until", "until": "9999-12-31T23:59"}, "until"),
                           ({"end": "until", "until": "1700000000"}, "until"),
                           ({"starts_at": (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=5))
                             .strftime("%Y-%m-%dT%H:%M")}, "ends_at")):
            r = c.post("/loyalty/silences", data={**form, **bad}, headers={"Origin": here})
            assert r.status_code == 400, (bad, r.status_code, r.text[:1000])
            assert "text/html" in r.headers["content-type"]
            assert f'data-field="{field}"' in r.text, (bad, r.text[:3000])


# ---------------------------------------------------------------- history and the check page: the calendar's edges

EDGES = [("since", "0001-01-01T00:00:00+00:00"), ("since", "0001-01-01T00:00:00+01:00"),
         ("until", "9999-12-31T23:59:59+00:00"), ("until", "9999-12-31T23:59:59-01:00"),
         ("since", "1700000000"), ("until", "1700000000"), ("since", "2026-11-01T00:00"),
         ("since", "2026-11-01T00:00:00+99:00"), ("until", "nul\x00")]


@pytest.mark.parametrize(("field", "value"), EDGES)
def test_history_refuses_times_at_the_edges(viewer, field, value):
    r = viewer.get(f"/loyalty/api/checks/{CHECK}/history", params={field: value})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(f"{field}: "), r.json()


@pytest.mark.parametrize(("field", "value"), EDGES)
def test_check_page_refuses_times_at_the_edges(viewer_page, field, value):
    r = viewer_page.get(f"/loyalty/checks/{CHECK}", params={field: value})
    assert r.status_code == 400, r.text[:2000]
    assert "text/html" in r.headers["content-type"]
    assert f'data-field="{field}"' in r.text


def test_check_page_shows_a_window_of_the_past_and_stays_in_the_calendar(console, viewer_page):
    t = console.seed["t"]
    r = viewer_page.get(f"/loyalty/checks/{CHECK}", params={"until": t.isoformat(), "days": 1})
    assert r.status_code == 200, r.text[:2000]
    assert r.text.count('class="notification-mark"') == 1  # T's trigger only; T-30h is outside the day
    latest = "9998-12-31T23:59:59+00:00"  # the last time the console takes: plus a year still fits
    r = viewer_page.get(f"/loyalty/checks/{CHECK}", params={"since": latest, "days": 365})
    assert r.status_code == 200, r.text[:2000]
    r = viewer_page.get(f"/loyalty/checks/{CHECK}", params={"since": t.isoformat(), "until": t.isoformat()})
    assert r.status_code == 400 and 'data-field="until"' in r.text


# ---------------------------------------------------------------- the OpenAPI document

def test_openapi_describes_the_real_responses(viewer):
    r = viewer.get("/loyalty/api/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    paths = doc["paths"]
    assert paths, doc
    assert all(p.startswith("/api/") for p in paths), list(paths)  # no HTML page described as JSON
    assert set(paths) >= {"/api/alerts", "/api/checks", "/api/checks/{check_id}/history", "/api/silences",
                          "/api/silences/{silence_id}"}
    schemes = doc["components"]["securitySchemes"]
    [bearer] = [name for name, s in schemes.items() if (s["type"], s.get("scheme")) == ("http", "bearer")]
    assert {bearer: []} in doc["security"]
    error = doc["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"detail", "field"} and error["required"] == ["detail"]
    for path, item in paths.items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert "422" not in codes, (method, path)  # the console answers 400, never 422
            assert {"400", "401", "403"} <= codes, (method, path, codes)
            for code in ("400", "401", "403") + (("404",) if "{" in path else ()):
                assert code in codes, (method, path, code)
                schema = op["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code, schema)
            ok = "201" if (method, path) == ("post", "/api/silences") else "200"  # an acknowledgement creates nothing
            assert op["responses"][ok]["content"]["application/json"]["schema"], (method, path)
            for content_type in (c for resp in op["responses"].values() for c in resp.get("content", {})):
                assert content_type == "application/json", (method, path, content_type)
    post = paths["/api/silences"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    body = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]] if "$ref" in body else body
    assert "author" not in body["properties"]
    assert set(body["required"]) == {"check_id", "reason"}
    for name in ("until", "starts_at"):
        assert {"type": "string", "format": "date-time"}.items() <= _nullable(body["properties"][name]).items()
    history = paths["/api/checks/{check_id}/history"]["get"]
    since = [p for p in history["parameters"] if p["name"] == "since"][0]
    assert _nullable(since["schema"])["format"] == "date-time"


def _nullable(schema: dict) -> dict:
    """The non-null branch of an `X | None` schema."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") != "null":
            return option
    raise AssertionError(schema)


# ---------------------------------------------------------------- HTML clients get HTML

def test_unknown_console_paths_get_the_html_error_page(viewer_page, viewer):
    for path in ("/loyalty/nope", "/loyalty/checks/x/y/z", "/loyalty/silences/1/expire"):
        r = viewer_page.get(path)
        assert r.status_code in (404, 405), (path, r.status_code)
        assert "text/html" in r.headers["content-type"], (path, r.text[:300])
        assert 'id="error"' in r.text and "Back to the alerts" in r.text
    r = viewer.get("/loyalty/api/nope")
    assert r.status_code == 404 and r.json()["detail"]
    r = viewer.put("/loyalty/api/silences")
    assert r.status_code == 405 and r.json()["detail"]


def test_links_leave_the_iframe(console, admin):
    r = admin.post("/loyalty/api/silences", json={"check_id": CHECK, "duration": "1h", "reason": "links"})
    assert r.status_code == 201
    try:
        for path in ("/loyalty/", f"/loyalty/checks/{CHECK}", "/loyalty/silences"):
            html = admin.get(path).text
            links = re.findall(r"<a [^>]*>", html)
            runbook = [a for a in links if catalog().runbook_link(CHECK) in a]
            assert runbook, path
            for a in runbook:
                assert 'target="_blank"' in a and re.search(r'rel="[^"]*noopener', a), (path, a)
            airflow = [a for a in links if re.search(r'href="(\./|\.\./)+\.\./dags/', a)]
            assert airflow or path.endswith("silences"), path
            for a in airflow:
                assert 'target="_top"' in a, (path, a)
    finally:
        admin.delete(f"/loyalty/api/silences/{r.json()['id']}")


def test_an_expired_session_goes_to_login_and_back_to_a_page(console):
    with console.client() as c:
        c.cookies.update({"_token": "expired.or.forged"})
        r = c.get(f"/loyalty/checks/{CHECK}", params={"days": 30})
        assert r.status_code == 302
        assert parse_qs(urlsplit(r.headers["location"]).query)["next"] == [f"/airflow/loyalty/checks/{CHECK}?days=30"]
        # A form posted with an expired session comes back to the form's page, which a GET can show.
        r = c.post("/loyalty/silences/7/expire", data={"csrf_token": "x"},
                   headers={"Referer": console.url + "/loyalty/silences?expired=3"})
        assert r.status_code == 303
        assert parse_qs(urlsplit(r.headers["location"]).query)["next"] == ["/airflow/loyalty/silences?expired=3"]
        r = c.post("/loyalty/silences/7/expire", headers={"Referer": "https://evil.example/loyalty/x"})
        assert parse_qs(urlsplit(r.headers["location"]).query)["next"] == ["/airflow/loyalty/"]
        # A path Airflow's login would refuse as `next` (it leaves the base path) is not sent there.
        r = c.get("/loyalty/checks/%2e%2e/%2e%2e/%2e%2e/x")
        assert parse_qs(urlsplit(r.headers["location"]).query)["next"] == ["/airflow/loyalty/"]
        follow = c.get(r.headers["location"].removeprefix("/airflow"))
        assert follow.status_code in (302, 307), follow.text
