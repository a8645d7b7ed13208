"""Load: 10,000 stores firing at once give one Slack message and one PagerDuty event,
each within its service's limits, worst first with the count of the rest, while the
evaluation keeps the full list."""

from __future__ import annotations

import json

from tests.sql.rows import MIN, T
from tests.test_dag_runs import P1, bodies
from tests.test_lifecycle_dags import tuned_catalog  # noqa: F401 - fixture

STORES = 10_000
SLACK_BLOCKS_MAX, SLACK_SECTION_MAX, SLACK_HEADER_MAX = 50, 3000, 150
PAGERDUTY_EVENT_MAX = 512 * 1024


def test_ten_thousand_stores_firing_at_once(db, run_dag, sink, tuned_catalog):  # noqa: F811
    tuned_catalog(rate_limit_spikes={"escalate_after": "0s"})  # page too, to check PagerDuty's limits
    db.execute("INSERT INTO merchants (id, name) VALUES (1, 'Acme')")
    db.execute("INSERT INTO stores (id, merchant_id, name) SELECT s, 1, 'Store ' || s || repeat('*', 200)"
               " FROM generate_series(1, %s) s", (STORES,))
    # store s gets 100 + s 429s in one minute: all breach, store 10000 is the worst
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT s, %s, 'GET', '/x' FROM generate_series(1, %s) s, generate_series(1, 100 + s %% 50 + 1)",
               (T - 10 * MIN, STORES))
    db.execute("ANALYZE rate_limit_events")
    dr, states = run_dag(P1, T)
    assert dr.state == "success", states

    [slack] = bodies(sink, "/slack")
    assert len(slack["blocks"]) <= SLACK_BLOCKS_MAX and len(slack["text"]) <= SLACK_SECTION_MAX
    assert len(slack["blocks"][0]["text"]["text"]) <= SLACK_HEADER_MAX
    sections = [b["text"]["text"] for b in slack["blocks"] if b["type"] == "section" and "text" in b]
    assert all(len(s) <= SLACK_SECTION_MAX for s in sections)
    [entity_list] = [s for s in sections if s.startswith("*Firing stores")]
    lines = entity_list.split("\n")
    assert lines[0] == f"*Firing stores ({STORES}), worst first*"
    assert lines[1].startswith("1. Store ") and lines[1].endswith("— 150 per minute")  # the worst: 49 % 50 + 101
    assert lines[-1] == f"+{STORES - 10} more"

    [page] = bodies(sink, "/pagerduty")
    assert len(json.dumps(page).encode()) < PAGERDUTY_EVENT_MAX
    assert len(page["payload"]["summary"]) <= 1024
    details = page["payload"]["custom_details"]
    assert len(details["entities"]) == 10 and details["entities_more"] == STORES - 10
    assert sink.requests == []

    stored = db.execute("SELECT jsonb_array_length(entities), entities_total FROM loyalty_monitoring.evaluations"
                        " WHERE check_id = 'rate_limit_spikes'").fetchone()
    assert stored == (STORES, STORES)  # the full list is kept


def test_fifty_checks_in_one_dag(db, dagbag, airflow_conns, sink, tmp_path, monkeypatch):
    """A catalog of 50 P1 checks builds one DAG of 50 task groups that runs green and
    notifies each firing check once."""
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    from loyalty_checks.catalog import DEFAULT_CATALOG, SQL_DIR

    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    template = next(c for c in data["checks"] if c["id"] == "rate_limit_spikes")
    data["checks"] = [c for c in data["checks"] if c["severity"] != "P1"] + [
        {**template, "id": f"rate_limit_spikes_{i:02d}", "threshold": 100 + i} for i in range(50)]
    # Sized as the time budget asks of 50 checks (budget.py): 5 waves of 10 queries, 50 tasks at once.
    data["db_pool_slots"], data["dags"]["P1"]["max_active_tasks"] = 10, 50
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
    bag = DagBag(dag_folder=str(SQL_DIR.parents[1] / "dags" / "loyalty_p1_checks.py"))
    assert bag.import_errors == {}
    dag = bag.dags[P1]
    assert len(dag.task_group.children) == 50
    for task in dag.tasks:
        task.retries = 0

    db.execute("INSERT INTO merchants (id, name) VALUES (1, 'Acme')")
    db.execute("INSERT INTO stores (id, merchant_id, name) VALUES (7, 1, 'Busy')")
    db.execute("INSERT INTO rate_limit_events (store_id, occurred_at, method, path)"
               " SELECT 7, %s, 'GET', '/x' FROM generate_series(1, 125)", (T - 10 * MIN,))
    dr = dag.test(logical_date=T)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success"
    assert sum(1 for k, v in states.items() if k.endswith(".measure") and v == "success") == 50
    # 125 per minute breaches thresholds 100..124: exactly those 25 checks post, once each
    slack = bodies(sink, "/slack")
    assert len(slack) == 25 and sink.requests == []
