"""GET /loyalty/api/alerts one page at a time, and "silenced" as the lifecycle decides it at
the time of the request (against the real api-server of conftest.py).

The paging test adds 250 pending alerts of another check for its own duration (and puts
the check's state back afterwards): the default page is 100 of them, `next` walks the rest.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.console.seed import CHECK

pytestmark = pytest.mark.console
MANY = "low_enrollment"  # a check per merchant (lowest value worst) without alerts in the seed
N = 250


@pytest.fixture
def many_alerts(console, pg):
    """N pending alerts of MANY (entities e000..e249), as lifecycle.py stores them."""
    since = dt.datetime.now(dt.timezone.utc).isoformat()
    alerts = {f"e{i:03}": {"status": "pending", "since": since, "breaches": 1, "cleans": 0,
                           "entity": {"id": f"e{i:03}", "name": f"Entity {i:03}", "value": float(i)}}
              for i in range(N)}
    lifecycle = {"status": "pending", "since": since, "alerts": alerts, "announced": []}
    with pg.connect(console.db_name, autocommit=True) as db:
        before = db.execute("SELECT status, since, last_evaluated_at, last_run_id, lifecycle"
                            " FROM loyalty_monitoring.check_state WHERE check_id = %s", (MANY,)).fetchone()
        db.execute("INSERT INTO loyalty_monitoring.check_state (check_id, status, since, last_run_id, lifecycle)"
                   " VALUES (%s, 'pending', now(), 'paging_test', %s)"
                   " ON CONFLICT (check_id) DO UPDATE SET status = EXCLUDED.status, lifecycle = EXCLUDED.lifecycle",
                   (MANY, json.dumps(lifecycle)))
    try:
        yield
    finally:
        with pg.connect(console.db_name, autocommit=True) as db:
            if before is None:
                db.execute("DELETE FROM loyalty_monitoring.check_state WHERE check_id = %s", (MANY,))
            else:
                db.execute("UPDATE loyalty_monitoring.check_state SET status = %s, since = %s, last_evaluated_at = %s,"
                           " last_run_id = %s, lifecycle = %s WHERE check_id = %s",
                           (*before[:4], json.dumps(before[4]), MANY))


def test_alerts_are_paged_by_default_and_next_walks_every_page(viewer, many_alerts):
    r = viewer.get("/loyalty/api/alerts", params={"check_id": MANY})
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["total"], page["offset"], page["limit"], len(page["alerts"])) == (N, 0, 100, 100)
    assert r.headers["X-Total-Count"] == str(N)
    assert r.headers["Link"] == f'<{page["next"]}>; rel="next"'
    assert "/airflow/loyalty/api/alerts?" in page["next"]  # under the base_url's sub-path
    seen = [a["entity_id"] for a in page["alerts"]]
    while page["next"]:
        r = viewer.get(page["next"])  # absolute: the client follows it as it is
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [a["entity_id"] for a in page["alerts"]]
    assert page["offset"] == 200 and len(page["alerts"]) == 50 and "Link" not in r.headers
    assert seen == [f"e{i:03}" for i in range(N)]  # each once, the worst (lowest) first
    whole = viewer.get("/loyalty/api/alerts", params={"check_id": MANY, "limit": 1000}).json()
    assert whole["next"] is None and [a["entity_id"] for a in whole["alerts"]] == seen


@pytest.mark.parametrize("params", [{"limit": "1001"}, {"limit": "0"}, {"offset": "-1"}])
def test_a_page_too_large_or_before_the_start_is_a_400_naming_the_field(viewer, params):
    r = viewer.get("/loyalty/api/alerts", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == next(iter(params))


def test_the_openapi_document_describes_the_paging(viewer):
    doc = viewer.get("/loyalty/api/openapi.json").json()
    op = doc["paths"]["/api/alerts"]["get"]
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert params["limit"]["default"] == 100 and params["limit"]["maximum"] == 1000
    assert params["offset"]["default"] == 0
    assert {"Link", "X-Total-Count"} <= set(op["responses"]["200"]["headers"])
    schema = doc["components"]["schemas"]["Alerts"]["properties"]
    assert {"alerts", "total", "offset", "limit", "next"} <= set(schema)


def test_a_planned_silence_silences_nothing_until_it_starts(admin, viewer):
    """The console asks lifecycle.silence_covers at the request time: a silence of store 12
    that starts in an hour is listed (not active) and does not silence the alert yet."""
    starts = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    r = admin.post("/loyalty/api/silences", json={"check_id": CHECK, "entity_id": "12", "starts_at": starts.isoformat(),
                                                  "duration": "2h", "reason": "planned"})
    assert r.status_code == 201, r.text
    planned = r.json()
    try:
        listed = {s["id"]: s for s in viewer.get("/loyalty/api/silences").json()["silences"]}
        assert listed[planned["id"]]["active"] is False
        alerts = {a["entity_id"]: a for a in viewer.get("/loyalty/api/alerts", params={"check_id": CHECK}).json()["alerts"]}
        assert alerts["12"]["silenced"] is False and planned["id"] not in alerts["12"]["silence_ids"]
    finally:
        assert admin.delete(f"/loyalty/api/silences/{planned['id']}").status_code == 200
