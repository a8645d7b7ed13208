"""The learned-baseline check store_transactions_drop end to end (shared/spec/baselines.md):
the catalog's `baseline` block and its errors, the hours left out of a store's history
(from the alert state in loyalty_monitoring, as the DAG reads it), the Slack message with
the expected count and the band, the backtest and sweep on baseline fields, and the
console's band. The statistics themselves: tests/test_baseline.py; the lifecycle on rows:
tests/checks/store_transactions_drop.yaml.
"""

from __future__ import annotations

import copy
import datetime as dt
import io

import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG, CatalogError, catalog, parse_catalog, with_overrides
from loyalty_checks.evaluate import excluded_hours
from tests.sql.rows import MIN, D, H, insert, merchant, store
from tests.test_dag_runs import P1, bodies

UTC = dt.timezone.utc
CHECK = "store_transactions_drop"
T1 = dt.datetime(2026, 11, 17, 15, tzinfo=UTC)  # a Tuesday, 15:00


def busy(db, store_id: int, per_hour: int, start: dt.datetime, end: dt.datetime, merchant_id: int = 1) -> None:
    """`per_hour` transactions in every hour from 08:00 to 20:00 (UTC) in [start, end), on
    the merchant's card (its id is the merchant's)."""
    db.execute("""
        INSERT INTO loyalty_transactions (card_id, merchant_id, store_id, kind, stamps, created_at)
        SELECT %(merchant)s, %(merchant)s, %(store)s, 'stamp_add', 1, h + interval '10 minutes'
        FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour', interval '1 hour') AS h,
             generate_series(1, %(n)s)
        WHERE extract(hour FROM h AT TIME ZONE 'UTC') BETWEEN 8 AND 19
        """, {"store": store_id, "start": start, "end": end, "n": per_hour, "merchant": merchant_id})


def stores_with_history(db, t: dt.datetime = T1, merchant_id: int = 1, stores=((1, "Main St"), (2, "Harbour"))) -> None:
    """A merchant (its program and card have its id) whose stores had 8 transactions an hour
    from 08:00 to 20:00 for the 4 weeks before the window judged at `t`."""
    merchant(db, merchant_id, "Acme")
    insert(db, "loyalty_programs", id=merchant_id, merchant_id=merchant_id, program_type="stamps", stamps_target=10,
           is_active=True, created_at=t - 365 * D)
    insert(db, "loyalty_cards", id=merchant_id, program_id=merchant_id, merchant_id=merchant_id, is_active=True,
           enrolled_at=t - 365 * D)
    for sid, name in stores:
        store(db, sid, merchant_id, name, created_at=t - 60 * D)
        busy(db, sid, 8, t - 28 * D - 3 * H, t - 3 * H, merchant_id)


def recent(db, store_id: int, n: int, at: dt.datetime, merchant_id: int = 1) -> None:
    db.execute("INSERT INTO loyalty_transactions (card_id, merchant_id, store_id, kind, stamps, created_at)"
               " SELECT %s, %s, %s, 'stamp_add', 1, %s FROM generate_series(1, %s)",
               (merchant_id, merchant_id, store_id, at, n))


# ---------------------------------------------------------------- the catalog

def _catalog_with(change) -> None:
    data = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    data = copy.deepcopy(data)
    check = next(c for c in data["checks"] if c["id"] == CHECK)
    change(check)
    parse_catalog(data, DEFAULT_CATALOG)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(threshold=5), "check 'store_transactions_drop', field 'threshold': a check with `baseline` has none"),
    (lambda c: c.update(window="3h"), "field 'window': a check with `baseline` has none (its window is baseline.window)"),
    (lambda c: c.update(entity=None), "field 'baseline': needs `entity`"),
    (lambda c: c.update(comparison=">="), "field 'comparison': a baseline fires on a drop (<) or a rise (>), got '>='"),
    (lambda c: c["baseline"].update(tail=0.7), "check 'store_transactions_drop', field 'baseline.tail': must be between 0 and 0.5 (a tail probability)"),
    (lambda c: c["baseline"].update(window="90m"), "field 'baseline.window': must be a positive number of whole hours"),
    (lambda c: c["baseline"].update(season="hour_of_month"), "field 'baseline.season': must be one of hour_of_week, hour_of_day, none"),
    (lambda c: c["baseline"].update(min_expected=0), "field 'baseline.min_expected': must be > 0, got 0"),
    (lambda c: c["baseline"].update(tails=0.01), "unknown field 'tails'"),
    (lambda c: c.pop("baseline"), "field 'threshold': is required (or `baseline`"),
])
def test_a_bad_baseline_names_the_check_and_the_field(change, message):
    with pytest.raises(CatalogError) as err:
        _catalog_with(change)
    assert message in str(err.value)


def test_baseline_fields_are_overridden_like_any_field():
    cat = catalog()
    check = with_overrides(cat, CHECK, {"baseline.tail": 0.0001, "baseline.window": "2h"})
    assert (check.baseline.tail, check.baseline.window, check.baseline.history) == (0.0001, 2 * H, 28 * D)
    assert cat.check(CHECK).baseline.tail == 0.001  # the catalog's stays
    with pytest.raises(CatalogError, match=r"field 'baseline.tail': must be between 0 and 0.5 \(a tail probability\), got 2"):
        with_overrides(cat, CHECK, {"baseline.tail": 2})
    with pytest.raises(CatalogError, match=r"'baseline.bogus' is not a baseline field \(allowed: baseline.season"):
        with_overrides(cat, CHECK, {"baseline.bogus": 1})
    with pytest.raises(CatalogError, match="check 'rate_limit_spikes' has no baseline"):
        with_overrides(cat, "rate_limit_spikes", {"baseline.tail": 0.01})


# ---------------------------------------------------------------- hours left out

def test_excluded_hours_are_the_firing_windows_and_the_silenced_hours():
    check = catalog().check(CHECK)
    t = T1 + 20 * MIN  # judged as of 15:00
    firing = [(T1 - 7 * D, [{"id": "1", "window_start": (T1 - 7 * D - 2 * H).isoformat()},
                            {"id": "2"}]),  # no window recorded: its last hour
              (T1 - 40 * D, [{"id": "1", "window_start": (T1 - 40 * D - 3 * H).isoformat()}])]  # before the span
    silences = [("2", T1 - 2 * D + 30 * MIN, T1 - 2 * D + 2 * H + 5 * MIN),  # touches 3 hours
                (None, T1 - 1 * H, T1 + 3 * H)]                              # the whole check, up to T
    got = excluded_hours(check, t, firing, silences)
    assert got == {"1": {T1 - 7 * D - 2 * H, T1 - 7 * D - H},
                   "2": {T1 - 7 * D - H, T1 - 2 * D, T1 - 2 * D + H, T1 - 2 * D + 2 * H},
                   None: {T1 - H}}


# ---------------------------------------------------------------- the DAG

def test_p1_dag_says_what_was_expected_and_leaves_a_stores_outage_out_of_its_history(db, run_dag, sink):
    stores_with_history(db)
    recent(db, 1, 1, T1 - 90 * MIN)          # Main St: 1 in the last 2 hours
    recent(db, 2, 8, T1 - 90 * MIN)          # Harbour: as usual
    recent(db, 2, 8, T1 - 30 * MIN)
    dr, states = run_dag(P1, T1)
    assert dr.state == "success", states
    assert states[f"{CHECK}.notify_slack"] == "success"
    [slack] = [b for b in bodies(sink, "/slack/alerts") if CHECK in json_text(b)]
    assert slack["text"] == ("[P1] FIRING: Store transactions far below usual — Main St: 1 transaction in the"
                             " last 2 h, usual for Tue 13:00–15:00 is 15 (8–24)")
    assert {"type": "mrkdwn", "text": "*Fires when*\nfar below its usual level (p < 0.001)"} in slack["blocks"][2]["fields"]
    assert {"type": "mrkdwn", "text": "*Window*\nlast 1–3h, per store"} in slack["blocks"][2]["fields"]
    assert slack["blocks"][3]["text"]["text"] == (
        "*Firing stores (1), worst first*\n1. Main St: 1 transaction in the last 2 h, usual for Tue 13:00–15:00"
        " is 15 (8–24)")

    # A week later Main St is down again. Its outage of last week was a firing window: left
    # out of its history, so the bar is where it was, and 0 fires again.
    for sid in (1, 2):
        busy(db, sid, 8, T1, T1 + 7 * D - 3 * H)
    recent(db, 2, 16, T1 + 7 * D - 90 * MIN)
    dr, states = run_dag(P1, T1 + 7 * D)
    evaluation = db.execute("SELECT entities, details FROM loyalty_monitoring.evaluations"
                            " WHERE check_id = %s AND evaluated_at = %s", (CHECK, T1 + 7 * D)).fetchone()
    assert [(e["id"], e["value"], e["expected"], e["band"]) for e in evaluation[0]] == [("1", 0, 15.24, [8, 24])]
    assert evaluation[1]["judged"] == {"firing": 1, "ok": 1}
    # What the DAG's decide step left out: the window it fired on a week before (13:00-15:00).
    from loyalty_checks.store.alerts import left_out_hours

    assert left_out_hours(db, catalog().check(CHECK), T1 + 7 * D) == {"1": {T1 - 2 * H, T1 - H}}


def json_text(body) -> str:
    import json

    return json.dumps(body, ensure_ascii=False)


# ---------------------------------------------------------------- backtest

def test_backtest_and_sweep_on_baseline_fields_predict_what_each_run_would_decide(db):
    from loyalty_checks import pipeline
    from loyalty_checks.backtest import plot_png, run_backtest
    from loyalty_checks.measure import measure

    stores_with_history(db)
    start, end = T1, T1 + 2 * D
    busy(db, 1, 8, T1 - 3 * H, end)
    busy(db, 2, 8, T1 - 3 * H, T1 + 19 * H)   # Harbour: nothing on Wed 10:00-14:00
    busy(db, 2, 8, T1 + 23 * H, end)
    result = run_backtest(CHECK, start, end, {"baseline.tail": "0.0001"}, db, series=True,
                          sweep="baseline.tail=0.0001:0.0011:0.0005")
    assert result["settings"]["baseline.tail"] == 0.0001
    assert result["baseline"]["settings"]["baseline.tail"] == 0.001  # the catalog's, side by side
    assert result["evaluations"] == 48 and result["errors"] == 0
    events = [(n["t"], n["event"], n["entities"]) for n in result["notifications"]]
    assert events == [((T1 + 21 * H).isoformat(), "trigger", ["2"]), ((T1 + 24 * H).isoformat(), "resolve", ["2"])]
    assert [s["value"] for s in result["sweep"]] == [0.0001, 0.0006, 0.0011]
    assert [s["summary"]["notifications"] for s in result["sweep"]] == [2, 2, 2]

    # The same T after T through the DAGs' path (the SQL of one run, which reads only the
    # stores it can judge): the same decisions.
    check = catalog().check(CHECK)
    memory, stepped = pipeline.MemoryStore(), []
    t = start + H
    while t <= end:
        decision = pipeline.run(check, measure(check, t, db), memory)
        stepped += [(t.isoformat(), str(n.event), sorted(e["id"] for e in n.to_dict().get(
            "new" if str(n.event) == "trigger" else "recovered", []))) for n in decision.notifications]
        t += H
    catalog_events = [(n["t"], n["event"], n["entities"]) for n in result["baseline"]["notifications"]]
    assert stepped == catalog_events

    series = result["series"]
    assert series["threshold"] is None and series["entities"][0]["id"] == "2"
    assert series["entities"][0]["low"][21] is not None  # the band drawn for the worst store
    png = io.BytesIO()
    plot_png(result, png)
    assert png.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_catalog_offers_the_seasons_the_statistics_know():
    """The catalog names them without importing numpy (it is read at every DAG parse)."""
    from loyalty_checks import baseline
    from loyalty_checks.catalog import SEASONS

    assert SEASONS == tuple(baseline.SEASONS)
