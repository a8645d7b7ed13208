"""The demo platform (demo/generate.py + demo/generate.sql) through the real check code.

With incidents, exactly the intended checks fire as of T, for the intended entities;
without, no P0/P1 check fires. Every check is measured by the package's own path:
catalog -> measure (read-only transaction on a non-autocommit connection) -> evaluate.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from demo.generate import NotEmptyError, generate, healthy, main
from loyalty_checks.catalog import catalog
from loyalty_checks.evaluate import FIRING
from loyalty_checks.measure import measure
from loyalty_checks.pipeline import outcome_of

T = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)

HOSTILE_STORE = "Burger <!channel> *Palace* & Co_ ~test~ <http://evil.example|click>"

# check id -> breaching entity ids (None for checks without entities)
INTENDED_FIRING = {
    "expiration_task_stale": None,
    "google_wallet_down": None,
    "wallet_sync_failures": ["google"],
    "email_failure_rate": None,
    "rate_limit_spikes": ["3", "6"],        # worst first: 187/min, then 131/min
    "store_transactions_drop": ["2"],       # 0 in the last 2 h, usually about 19
    "high_churn": None,
    "low_enrollment": ["13", "7"],          # worst first: 0 cards, then 2
    "low_cohort_retention": None,
}
INTENDED_HEALTHY = {"low_redemption_rate"}
# The story's checks. A check the story does not know (a site's own, added with its four files)
# is measured on the demo data all the same, and must evaluate, but what it finds is not asserted.
STORY = set(INTENDED_FIRING) | INTENDED_HEALTHY


def evaluate_all(conn, t=T):
    return {check.id: outcome_of(check, measure(check, t, conn)) for check in catalog().checks
            if check.source == "loyalty_db"}


@pytest.fixture
def conn(pg, loyalty_db):
    """A non-autocommit connection, as the DAG tasks use: measure() runs read-only
    transactions on it and rolls them back."""
    with pg.connect(loyalty_db) as connection:
        yield connection


@pytest.fixture
def incident_results(conn):
    generate(conn, T)
    return evaluate_all(conn)


def test_catalog_covers_the_demo_story():
    """The story above names checks of the catalog, each once, and is a story about every check
    of the contract (tests/test_catalog.py CONTRACT_IDS) that reads loyalty_db."""
    from tests.test_catalog import CONTRACT_IDS

    ids = {c.id for c in catalog().checks if c.source == "loyalty_db"}  # not the P0 watchdog
    assert not set(INTENDED_FIRING) & INTENDED_HEALTHY
    assert STORY <= ids
    assert STORY == {i for severity in CONTRACT_IDS.values() for i in severity} & ids


def test_checks_outside_the_story_evaluate_on_the_demo_data(incident_results):
    assert all(ev.status in ("ok", "no_data", FIRING) for ev in incident_results.values())


def test_exactly_the_intended_checks_fire(incident_results):
    firing = {cid for cid, ev in incident_results.items() if ev.status == FIRING and cid in STORY}
    assert firing == set(INTENDED_FIRING), {cid: (ev.status, ev.value) for cid, ev in incident_results.items()}
    for cid, entity_ids in INTENDED_FIRING.items():
        if entity_ids is not None:
            assert [e["id"] for e in incident_results[cid].entities] == entity_ids, cid
    for cid in INTENDED_HEALTHY:
        assert incident_results[cid].status == "ok", (cid, incident_results[cid])


def test_p0_incident_values(incident_results):
    stale = incident_results["expiration_task_stale"]
    assert 30.5 < stale.value < 31.5                     # last success ~31 h before T
    assert stale.details["failures_since_last_success"] == 2   # the 01:00 run and a manual re-run

    wallet = incident_results["google_wallet_down"]
    assert wallet.details["runs_found"] == 2
    assert 0.65 < wallet.value < 0.75                    # the older of the two: ~70 %
    assert 0.75 < wallet.details["latest_failure_ratio"] < 0.85   # the latest: ~80 %


def test_p1_incident_values(incident_results):
    sync = incident_results["wallet_sync_failures"]
    assert sync.entities_total == 2                      # apple measured too, and healthy
    assert sync.entities[0]["value"] > 0.5

    email = incident_results["email_failure_rate"]
    assert 0.02 < email.value < 0.04                     # ~3 % of loyalty_* e-mails
    assert email.details["queued"] > 0                   # queued ones are left out

    spikes = incident_results["rate_limit_spikes"]
    hostile, other = spikes.entities
    assert hostile["name"] == HOSTILE_STORE and hostile["value"] >= 180
    assert 100 < other["value"] < 150


def test_p2_incident_values(incident_results):
    assert incident_results["high_churn"].value > 0.23
    enrollment = {e["id"]: e["value"] for e in incident_results["low_enrollment"].entities}
    assert enrollment == {"13": 0.0, "7": 2.0}
    cohort = incident_results["low_cohort_retention"]
    assert cohort.details["cohort_month"] == "2026-07" and cohort.value < 0.35
    assert incident_results["low_redemption_rate"].value > 0.4


def test_other_stores_stay_well_below_the_rate_limit(conn):
    generate(conn, T)
    check = catalog().check("rate_limit_spikes")
    measured = measure(check, T, conn).rows()["entities"]
    others = [e["value"] for e in measured if e["id"] not in ("3", "6")]
    assert others and max(others) <= 60


def test_healthy_platform_nothing_fires(conn):
    healthy(conn, T)
    results = evaluate_all(conn)
    urgent = {cid: ev.value for cid, ev in results.items()
              if ev.status == FIRING and catalog().check(cid).severity in ("P0", "P1") and cid in STORY}
    assert urgent == {}
    # every P0/P1 check of the story had data to judge (a healthy platform, not an empty one)
    for check in catalog().checks:
        if check.severity in ("P0", "P1") and check.source == "loyalty_db" and check.id in STORY:
            assert results[check.id].status == "ok", (check.id, results[check.id])
    # and the business is healthy too
    assert {cid for cid, ev in results.items() if ev.status == FIRING and cid in STORY} == set()


def test_incidents_are_relative_to_t(pg, loyalty_db):
    """Any T works (the compose demo uses now): a night-time, not minute-aligned T."""
    t = dt.datetime(2026, 3, 1, 3, 17, 42, tzinfo=dt.timezone.utc)
    with pg.connect(loyalty_db) as conn:
        generate(conn, t)
        results = evaluate_all(conn, t)
    urgent = {cid for cid, ev in results.items()
              if ev.status == FIRING and catalog().check(cid).severity in ("P0", "P1") and cid in STORY}
    assert urgent == {cid for cid in INTENDED_FIRING if catalog().check(cid).severity in ("P0", "P1")}


def test_generation_is_fast_and_deterministic(conn):
    started = time.monotonic()
    counts = generate(conn, T)
    elapsed = time.monotonic() - started
    # About 3 s on the 2-core machine alone; 20 s holds when it is busy and still catches a generator gone row by row.
    assert elapsed < 20, f"generate() took {elapsed:.1f} s"
    assert counts["merchants"] == 20 and counts["stores"] == 40 and counts["loyalty_cards"] == 3001  # and the counter card of the till story

    fingerprint = ("SELECT md5(string_agg(concat_ws(',', card_id, kind, stamps, points, created_at), ';'"
                   " ORDER BY id)) FROM loyalty_transactions")
    first = conn.execute(fingerprint).fetchone()[0]
    conn.rollback()
    assert generate(conn, T, replace=True) == counts
    assert conn.execute(fingerprint).fetchone()[0] == first
    conn.rollback()


def test_refuses_a_database_that_has_data(conn):
    generate(conn, T)
    with pytest.raises(NotEmptyError):
        generate(conn, T)


def test_data_is_consistent(conn):
    generate(conn, T)
    q = lambda sql: conn.execute(sql, {"t": T}).fetchone()[0]  # noqa: E731
    # nothing is dated after T
    assert q("""SELECT (SELECT count(*) FROM loyalty_transactions WHERE created_at > %(t)s)
                     + (SELECT count(*) FROM email_logs WHERE created_at > %(t)s OR sent_at > %(t)s)
                     + (SELECT count(*) FROM loyalty_cards WHERE enrolled_at > %(t)s
                            OR last_activity_at > %(t)s OR deactivated_at > %(t)s)
                     + (SELECT count(*) FROM celery_taskmeta WHERE date_done > %(t)s AT TIME ZONE 'UTC')
                     + (SELECT count(*) FROM rate_limit_events WHERE occurred_at > %(t)s)
                     + (SELECT count(*) FROM loyalty_wallet_sync_runs
                            WHERE started_at > %(t)s OR finished_at > %(t)s)""") == 0
    # cards agree with their transactions
    assert q("""SELECT count(*) FROM loyalty_cards AS c
                LEFT JOIN (SELECT card_id, sum(stamps) AS s, sum(points) AS p,
                                  max(created_at) FILTER (WHERE kind IN ('stamp_add', 'stamp_redeem',
                                                                         'points_earn', 'points_redeem')) AS last
                           FROM loyalty_transactions GROUP BY card_id) AS t ON t.card_id = c.id
                WHERE c.stamp_count <> coalesce(t.s, 0) OR c.points_balance <> coalesce(t.p, 0)
                   OR c.last_activity_at IS DISTINCT FROM t.last
                   OR c.stamp_count < 0 OR c.points_balance < 0""") == 0
    assert q("""SELECT count(*) FROM loyalty_transactions AS t JOIN loyalty_cards AS c ON c.id = t.card_id
                WHERE t.created_at < c.enrolled_at OR t.created_at > c.deactivated_at
                   OR t.merchant_id <> c.merchant_id""") == 0
    # some of each kind of card
    assert q("SELECT count(*) FROM loyalty_cards WHERE google_object_id IS NOT NULL") > 500
    assert q("SELECT count(*) FROM loyalty_cards WHERE apple_serial_number IS NOT NULL") > 500
    assert q("SELECT count(*) FROM loyalty_cards WHERE NOT is_active AND customer_email IS NOT NULL") > 10
    assert q("""SELECT count(*) FROM loyalty_cards WHERE customer_email IS NULL
                AND anonymized_at IS NOT NULL AND NOT is_active""") > 10
    assert q("""SELECT count(*) FROM loyalty_cards WHERE customer_email IS NOT NULL
                AND customer_email <> 'customer' || id || '@example.com'""") == 0
    # every transaction kind and e-mail status, stamps and points programs, a recent program
    assert q("SELECT count(DISTINCT kind) FROM loyalty_transactions") == 8
    assert q("SELECT count(DISTINCT status) FROM email_logs WHERE template_code LIKE 'loyalty\\_%%'") == 7
    assert q("SELECT count(*) FROM email_logs WHERE template_code NOT LIKE 'loyalty\\_%%'") > 1000
    assert q("SELECT count(DISTINCT program_type) FROM loyalty_programs") == 2
    assert q("SELECT count(*) FROM loyalty_programs WHERE created_at > %(t)s - interval '7 days'") == 1
    # error messages carry no personal data
    assert q("SELECT count(*) FROM email_logs WHERE error_message LIKE '%%@%%'") == 0
    # failed card ids are real wallet cards of that provider, as many as cards_failed
    assert q("""SELECT count(*) FROM loyalty_wallet_sync_runs AS r
                WHERE cardinality(r.failed_card_ids) <> r.cards_failed
                   OR EXISTS (SELECT 1 FROM unnest(r.failed_card_ids) AS f (id)
                              LEFT JOIN loyalty_cards AS c ON c.id = f.id
                              WHERE CASE r.provider WHEN 'google' THEN c.google_object_id
                                                    ELSE c.apple_serial_number END IS NULL)""") == 0
    # both Celery tasks, runs every ~15 min per provider, one still going
    assert q("SELECT count(DISTINCT name) FROM celery_taskmeta") == 2
    assert 2 * 90 <= q("""SELECT count(*) FROM loyalty_wallet_sync_runs
                          WHERE started_at > %(t)s - interval '1 day'""") <= 2 * 96
    assert q("SELECT count(*) FROM loyalty_wallet_sync_runs WHERE finished_at IS NULL") == 2
    assert conn.execute("SELECT count(*) FROM stores WHERE name = %s", [HOSTILE_STORE]).fetchone()[0] == 1
    conn.rollback()


def test_cli(pg, loyalty_db, capsys):
    dsn = pg.conninfo(loyalty_db)
    assert main(["--dsn", dsn, "--t", "2026-11-23T08:00:00Z", "--healthy"]) == 0
    out = capsys.readouterr().out
    assert "2026-11-23T08:00:00+00:00" in out and "healthy" in out
    assert re.search(r"loyalty_cards\s+3001", out)  # 3000 members and one counter card
    assert main(["--dsn", dsn, "--t", "2026-11-23T08:00:00Z"]) == 2        # not empty
    assert main(["--dsn", dsn, "--t", "2026-11-23T08:00:00Z", "--replace"]) == 0
