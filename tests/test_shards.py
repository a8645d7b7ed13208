"""A severity split over several DAGs (`dags.P0.shards`, issue 16): each check runs in exactly
one of `loyalty_p0_checks`, `loyalty_p0_checks_2`, ... (a hash of its id), a task process
builds only its own DAG's task, a shard runs and pages like the unsharded DAG, the P1
watchdog watches every shard, the console links each check to its shard, and what cannot
be sharded (the weekly digest) is an error naming the field. The unsharded default keeps
the contract's ids (every other test).
"""

from __future__ import annotations

import copy

import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG, CatalogError, catalog, parse_catalog
from tests.conftest import ROOT
from tests.sql.rows import MIN, H, T
from tests.test_cost import parse_as
from tests.test_dag_runs import bodies, expire_points_success

P0, P0_2 = "loyalty_p0_checks", "loyalty_p0_checks_2"


def _shipped() -> dict:
    return yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))


@pytest.fixture
def two_p0_shards(tmp_path, monkeypatch):
    data = _shipped()
    data["dags"]["P0"]["shards"] = 2
    path = tmp_path / "sharded-checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
    return path


def test_each_check_runs_in_exactly_one_shard(two_p0_shards):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert {P0, P0_2, "loyalty_p1_checks", "loyalty_p2_checks"} <= set(bag.dags)
    groups = {d: sorted(g for g in bag.dags[d].task_group.children if "heartbeat" not in g) for d in (P0, P0_2)}
    assert groups == {P0: ["google_wallet_down"], P0_2: ["expiration_task_stale"]}
    for dag_id in (P0, P0_2):  # each shard has its own heartbeat and time budget
        dag = bag.dags[dag_id]
        assert {"heartbeat", "heartbeat_failed"} <= set(dag.task_ids)
        assert dag.description.startswith(f"Loyalty P0 checks (shard {1 if dag_id == P0 else 2} of 2): ")
        assert dag.dagrun_timeout == catalog().dags["P0"].run_timeout
    cat = catalog()
    assert [cat.dag_id_of(c) for c in cat.for_severity("P0")] == [P0_2, P0]
    assert cat.dag_ids == [P0, P0_2, "loyalty_p1_checks", "loyalty_p2_checks"]
    # The watchdog's {dags_of: P0} is every P0 DAG.
    assert cat.check("p0_checks_stale").params["dag_ids"] == f"{P0},{P0_2}"


def test_a_task_process_of_a_shard_builds_only_its_task(monkeypatch, two_p0_shards):
    dag = parse_as(monkeypatch, two_p0_shards, "loyalty_p0_checks.py", P0_2, "expiration_task_stale.measure")
    assert dag.dag_id == P0_2 and dag.task_ids == ["expiration_task_stale.measure"]


def test_a_shard_runs_and_pages_with_its_own_dag_id(db, run_dag, sink, two_p0_shards):
    expire_points_success(db, T - 31 * H, "first")
    dr, states = run_dag(P0_2, T)
    assert dr.state == "success", states
    assert states["expiration_task_stale.notify_pagerduty"] == "success"
    [page] = bodies(sink, "/pagerduty")
    assert page["dedup_key"] == "loyalty/expiration_task_stale" and page["payload"]["group"] == P0_2
    recorded = db.execute("SELECT dag_id FROM loyalty_monitoring.evaluations WHERE check_id = 'expiration_task_stale'"
                          " AND evaluated_at = %s", (T,)).fetchone()
    assert recorded == (P0_2,)


def test_the_watchdog_pages_when_any_shard_stops(db, two_p0_shards):
    from loyalty_checks.measure import measure
    from loyalty_checks.pipeline import outcome_of
    from loyalty_checks.store import ensure_schema

    ensure_schema(db)
    check = catalog().check("p0_checks_stale")
    for dag_id, check_id, at in ((P0, "google_wallet_down", T - 5 * MIN), (P0_2, "expiration_task_stale", T - 25 * MIN),
                                 ("loyalty_p1_checks", "rate_limit_spikes", T - 60 * MIN)):  # not a P0 DAG
        db.execute("INSERT INTO loyalty_monitoring.evaluations (check_id, evaluated_at, severity, dag_id, run_id, status,"
                   " threshold, comparison) VALUES (%s, %s, 'P0', %s, %s, 'ok', 1, '>')",
                   (check_id, at, dag_id, f"scheduled__{at.isoformat()}"))
    outcome = outcome_of(check, measure(check, T, db))
    assert (outcome.status, outcome.value) == ("firing", 25.0)
    assert outcome.details["stalest_dag"] == P0_2


@pytest.mark.parametrize("change, message", [
    (lambda d: d["dags"]["P2"].update(shards=2), "dags.P2, field 'shards': the weekly digest is one DAG"),
    (lambda d: d["dags"]["P0"].update(shards=0), "dags.P0, field 'shards': must be >= 1"),
    (lambda d: (d["dags"]["P0"].update(shards=2), d["dags"]["P1"].update(dag_id="loyalty_p0_checks_2")),
     "dag_id values (with their shards) must differ"),
    (lambda d: d["dags"]["P0"].update(shard=2), "dags.P0: unknown field 'shard'"),
])
def test_what_cannot_be_sharded_is_an_error_naming_the_field(change, message):
    data = copy.deepcopy(_shipped())
    change(data)
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, DEFAULT_CATALOG)
    assert message in str(err.value)


def test_each_shard_has_its_own_budget_on_its_share_of_the_pool():
    """Shards run at once and share the loyalty_db pool: with 4 shards on the 4 slots of the
    shipped catalog, each shard's budget counts on 1."""
    from loyalty_checks.budget import dag_budget

    data = _shipped()
    data["dags"]["P0"]["shards"] = 4
    cat = parse_catalog(data, DEFAULT_CATALOG)
    specs = cat.shard_specs("P0")
    assert [s.dag_id for s in specs] == [P0, P0_2, "loyalty_p0_checks_3", "loyalty_p0_checks_4"]
    assert sum(len(cat.checks_of(s)) for s in specs) == len(cat.for_severity("P0"))
    assert dag_budget(specs[1], cat.checks_of(specs[1]), 1).pool_slots == 1
