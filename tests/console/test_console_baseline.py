"""The console on a learned-baseline check (store_transactions_drop): the check page draws
the usual range and the expected count instead of a threshold, its alerts list says what
was usual for each store, and the alerts API gives the same beside `baseline` (the
settings) and `threshold` null. The alert state is made by the DAGs' own path
(pipeline.run with the AlertStore) on the console's database, and removed after.
"""

from __future__ import annotations

import pytest

from loyalty_checks import pipeline
from loyalty_checks.catalog import catalog
from loyalty_checks.measure import measure
from loyalty_checks.store.alerts import AlertStore, RunRef
from tests.console.seed import now_hour
from tests.sql.rows import MIN, H
from tests.test_baseline_check import recent, stores_with_history

CHECK = "store_transactions_drop"
MERCHANT, STORES = 900, ((901, "Kiosk <b>North</b>"), (902, "Kiosk South"))


@pytest.fixture(scope="module")
def baseline_alert(console, pg):
    t = now_hour().replace(hour=15)  # the latest 15:00 UTC: the stores' busy hours
    t = t if t <= now_hour() else t - 24 * H
    check = catalog().check(CHECK)
    tables = ("evaluations", "check_state", "notifications")
    with pg.connect(console.db_name, autocommit=True) as db:
        for table in tables:  # the seed's run at its T (a later hour, no data) is set aside, and put back
            db.execute(f"CREATE TEMP TABLE kept_{table} AS SELECT * FROM loyalty_monitoring.{table}"  # noqa: S608
                       " WHERE check_id = %s", (CHECK,))
            db.execute(f"DELETE FROM loyalty_monitoring.{table} WHERE check_id = %s", (CHECK,))  # noqa: S608
        stores_with_history(db, t, MERCHANT, STORES)
        recent(db, 902, 16, t - 90 * MIN, MERCHANT)  # South as usual; North: nothing in the last hours
        for at in (t - H, t):
            store = AlertStore(db, RunRef("loyalty_p1_checks", f"manual__{at.isoformat()}", at))
            pipeline.run(check, measure(check, at, db), store)
        try:
            yield t
        finally:
            for table in tables:
                db.execute(f"DELETE FROM loyalty_monitoring.{table} WHERE check_id = %s", (CHECK,))  # noqa: S608
                db.execute(f"INSERT INTO loyalty_monitoring.{table} SELECT * FROM kept_{table}")  # noqa: S608
            db.execute("DELETE FROM loyalty_transactions WHERE merchant_id = %s", (MERCHANT,))


def test_check_page_draws_the_usual_range_and_the_alerts_say_what_was_usual(console, baseline_alert):
    with console.client("viewer") as c:
        html = c.get(f"/loyalty/checks/{CHECK}", params={"days": 7}).text
        alerts = c.get("/loyalty/api/alerts", params={"check_id": CHECK}).json()
    assert html.count('<polygon class="usual-band"') == 1 and '<polyline class="expected"' in html
    assert 'class="threshold"' not in html
    assert "fires far below its usual level (p &lt; 0.001)" in html
    assert "Kiosk &lt;b&gt;North&lt;/b&gt;" in html and "<b>North</b>" not in html
    assert "in the last 2 h, usual for" in html and "is 15 (8–24)" in html
    assert "season hour_of_week, history 28d" in html
    [alert] = alerts["alerts"]
    assert (alert["entity_id"], alert["state"], alert["value"]) == ("901", "firing", 0)
    assert (alert["expected"], alert["band"], alert["window_hours"]) == (15.42, [8, 24], 2)
    assert alert["threshold"] is None and alert["baseline"]["tail"] == 0.001 and alert["baseline"]["window"] == "3h"

