"""Acknowledge from the console (shared/spec/slack-actions.md): POST
/loyalty/api/alerts/<check id>/ack and the check page's button, on the real api-server; the
alerts API shows who acknowledged, the history has the action. The seeded check is put
back as it was afterwards (the console fixture is shared)."""

from __future__ import annotations

import re

import pytest

from tests.console.seed import CHECK


@pytest.fixture
def restored(console, pg):
    yield
    with pg.connect(console.db_name, autocommit=True) as conn:
        conn.execute("UPDATE loyalty_monitoring.check_state SET lifecycle = lifecycle - 'acknowledged_by'"
                     " - 'acknowledged_at' WHERE check_id = %s", (CHECK,))
        conn.execute("DELETE FROM loyalty_monitoring.actions WHERE check_id = %s", (CHECK,))


def test_ack_needs_a_user_and_the_silence_permission(console, viewer):
    with console.client() as anonymous:
        assert anonymous.post(f"/loyalty/api/alerts/{CHECK}/ack").status_code == 401
    r = viewer.post(f"/loyalty/api/alerts/{CHECK}/ack")
    assert r.status_code == 403 and "loyalty_silences" in r.json()["detail"]


def test_a_check_that_does_not_fire_is_not_acknowledged(admin):
    r = admin.post("/loyalty/api/alerts/email_failure_rate/ack")
    assert r.status_code == 409 and r.json()["detail"] == "email_failure_rate is not firing: nothing to acknowledge"
    assert admin.post("/loyalty/api/alerts/no_such_check/ack").status_code == 404


def test_admin_acknowledges_from_the_check_page_then_the_api_says_so(console, admin, restored):
    origin = console.url.rsplit("/airflow", 1)[0]
    with console.client() as c:
        c.cookies.update({"_token": console.token("admin")})
        page = c.get(f"/loyalty/checks/{CHECK}")
        assert 'id="ack-form"' in page.text and 'id="acknowledged"' not in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        assert c.post(f"/loyalty/checks/{CHECK}/ack", headers={"Origin": origin}).status_code == 403  # no token
        done = c.post(f"/loyalty/checks/{CHECK}/ack", data={"csrf_token": token}, headers={"Origin": origin})
        assert done.status_code == 303 and done.headers["location"] == f"../{CHECK}"
        page = c.get(f"/loyalty/checks/{CHECK}")
        assert 'id="ack-form"' not in page.text and "acknowledged by admin" in page.text
        assert "acknowledged by admin (from console)" in page.text  # the timeline
    alerts = [a for a in admin.get("/loyalty/api/alerts").json()["alerts"] if a["check_id"] == CHECK]
    assert alerts and {a["acknowledged_by"] for a in alerts} == {"admin"}
    assert all(a["acknowledged_at"] for a in alerts)
    again = admin.post(f"/loyalty/api/alerts/{CHECK}/ack")
    assert again.status_code == 200
    assert again.json()["result"] == "already acknowledged" and again.json()["acknowledged_by"] == "admin"
    history = admin.get(f"/loyalty/api/checks/{CHECK}/history").json()
    assert [(a["action"], a["actor"], a["source"]) for a in history["actions"]] == [("ack", "admin", "console")] * 2
    assert console.sink.take("/pagerduty") == []  # a Slack-only check: nobody was paged, nobody to tell
