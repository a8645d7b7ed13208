"""The check catalog: the shipped one is valid, and every kind of mistake is reported
with the file, the check and the field — also as an Airflow import error."""

from __future__ import annotations

import copy
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG, CatalogError, load_catalog, parse_catalog

CONTRACT_IDS = {
    "P0": ["expiration_task_stale", "google_wallet_down"],
    "P1": ["wallet_sync_failures", "email_failure_rate", "rate_limit_spikes",
           "p0_checks_stale"],  # the package's own watchdog of the P0 DAG (on loyalty_monitoring_db)
    "P2": ["high_churn", "low_enrollment", "low_redemption_rate", "low_cohort_retention"],
}


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(DEFAULT_CATALOG.read_text())


def test_shipped_catalog_matches_the_contract():
    cat = load_catalog()
    for severity, ids in CONTRACT_IDS.items():
        assert [c.id for c in cat.for_severity(severity)] == ids
    assert [cat.dags[s].dag_id for s in ("P0", "P1", "P2")] == [
        "loyalty_p0_checks", "loyalty_p1_checks", "loyalty_p2_checks"]
    thresholds = {c.id: (c.comparison, c.threshold, c.window) for c in cat.checks}
    assert thresholds == {
        "expiration_task_stale": (">", 26, None),
        "google_wallet_down": (">", 0.5, None),
        "wallet_sync_failures": (">", 0.05, timedelta(hours=1)),
        "email_failure_rate": (">", 0.01, timedelta(hours=24)),
        "rate_limit_spikes": (">", 100, timedelta(hours=1)),
        "p0_checks_stale": (">", 15, None),
        "high_churn": (">", 0.2, timedelta(days=90)),
        "low_enrollment": ("<", 5, timedelta(days=7)),
        "low_redemption_rate": ("<", 0.3, timedelta(days=90)),
        "low_cohort_retention": ("<", 0.4, None),
    }
    assert cat.check("expiration_task_stale").no_data == "fire"
    assert all(c.no_data == "ok" for c in cat.checks if c.id != "expiration_task_stale")
    assert cat.check("high_churn").params == {"at_risk_after": timedelta(days=30)}
    # Lifecycle defaults: fire on the first breach, resolve on the first clean run, remind
    # P0 every 4 h and P1 every day; only the watchdog pages from P1, at once.
    assert {(c.for_runs, c.clear_runs) for c in cat.checks} == {(1, 1)}
    assert {c.id: c.repeat_after for c in cat.checks if c.severity != "P2"} == {
        "expiration_task_stale": timedelta(hours=4), "google_wallet_down": timedelta(hours=4),
        "wallet_sync_failures": timedelta(days=1), "email_failure_rate": timedelta(days=1),
        "rate_limit_spikes": timedelta(days=1), "p0_checks_stale": timedelta(days=1)}
    assert {c.id: c.escalate_after for c in cat.checks if c.escalate_after is not None} == {
        "p0_checks_stale": timedelta(0)}
    assert {c.id for c in cat.checks if c.source != "loyalty_db"} == {"p0_checks_stale"}


def _mutate(raw, check_index, field, value):
    data = copy.deepcopy(raw)
    if value is _DELETE:
        del data["checks"][check_index][field]
    else:
        data["checks"][check_index][field] = value
    return data


_DELETE = object()

BAD_CHECKS = [
    # (check index, field, value, expected message part)
    (2, "for_runs", 0, "check 'wallet_sync_failures', field 'for_runs': must be >= 1"),
    (2, "clear_runs", "2", "check 'wallet_sync_failures', field 'clear_runs': expected an integer"),
    (2, "recovery_threshold", 0.08, "check 'wallet_sync_failures', field 'recovery_threshold': must be on the ok side"),
    (2, "repeat_after", "daily", "check 'wallet_sync_failures', field 'repeat_after': expected a duration"),
    (0, "escalate_after", "1h", "check 'expiration_task_stale', field 'escalate_after': only checks that warn on slack without paging escalate"),
    (0, "source", "warehouse", "check 'expiration_task_stale', field 'source': must be one of loyalty_db"),
    (0, "severity", "P3", "check 'expiration_task_stale', field 'severity': must be one of P0, P1, P2, got 'P3'"),
    (0, "sql", "p0/missing.sql", "check 'expiration_task_stale', field 'sql': SQL file not found"),
    (0, "sql", "../checks.yaml", "check 'expiration_task_stale', field 'sql': must be a .sql file under"),
    (1, "threshold", "0.5", "check 'google_wallet_down', field 'threshold': expected an integer or a number, got str '0.5'"),
    (1, "threshold", True, "check 'google_wallet_down', field 'threshold': expected an integer or a number, got a boolean"),
    (2, "window", "1 hour", "check 'wallet_sync_failures', field 'window': expected a duration like"),
    (2, "comparison", "=>", "check 'wallet_sync_failures', field 'comparison': must be one of >, >=, <, <="),
    (3, "no_data", "alert", "check 'email_failure_rate', field 'no_data': must be one of fire, ok"),
    (4, "entity", "customer", "check 'rate_limit_spikes', field 'entity': must be one of null, store"),
    (4, "no_data", "fire", "check 'rate_limit_spikes', field 'no_data': 'fire' needs a check without entities"),
    (4, "thresold", 3, "check 'rate_limit_spikes': unknown field 'thresold'"),
    (6, "action", "  ", "check 'high_churn', field 'action': must not be empty"),
    (6, "title", _DELETE, "check 'high_churn', field 'title': is required"),
    (7, "params", {"t": 1}, "check 'low_enrollment', field 'params': parameter name 't'"),
    (7, "params", {"x": [1]}, "check 'low_enrollment', field 'params': parameter 'x' must be text"),
    (8, "id", "Low-Redemption", "check 'Low-Redemption', field 'id': must be lower_snake_case"),
]


@pytest.mark.parametrize("index,field,value,message", BAD_CHECKS, ids=[f"{b[1]}={b[2]!r}" for b in BAD_CHECKS])
def test_bad_check_names_check_and_field(raw, index, field, value, message):
    with pytest.raises(CatalogError) as err:
        parse_catalog(_mutate(raw, index, field, value), Path("include/checks.yaml"))
    assert message in str(err.value)
    assert str(err.value).startswith("include/checks.yaml: ")


def test_duplicate_id(raw):
    data = copy.deepcopy(raw)
    data["checks"].append(copy.deepcopy(data["checks"][0]))
    with pytest.raises(CatalogError, match="check 'expiration_task_stale', field 'id': duplicate check id"):
        parse_catalog(data, Path("c.yaml"))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["dags"].pop("P1"), "field 'dags': missing the P1 DAG"),
    (lambda d: d["dags"]["P0"].update(retries="2"), "dags.P0, field 'retries': expected an integer"),
    (lambda d: d["dags"]["P0"].update(routes=["email"]), "dags.P0, field 'routes': unknown route 'email'"),
    (lambda d: d["dags"]["P2"].update(run_timeout="3 hours"), "dags.P2, field 'run_timeout': expected a duration"),
    (lambda d: d.update(entity_cap=0), "field 'entity_cap': must be >= 1"),
    (lambda d: d.update(colour="red"), "unknown field 'colour'"),
    (lambda d: d["digest_metrics"][0].update(sql="metrics/nope.sql"), "digest metric 'daily_enrollments', field 'sql': SQL file not found"),
])
def test_bad_top_level(raw, mutate, message):
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, Path("c.yaml"))
    assert message in str(err.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(CatalogError, match="cannot read the check catalog"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks: [\n")
    with pytest.raises(CatalogError, match="bad.yaml: not valid YAML"):
        load_catalog(bad)


def test_bad_catalog_is_an_airflow_import_error(raw, tmp_path):
    """A DAG file built from a broken catalog shows as an import error naming check and field."""
    from airflow.dag_processing.dagbag import DagBag

    catalog_file = tmp_path / "checks.yaml"
    catalog_file.write_text(yaml.safe_dump(_mutate(raw, 1, "threshold", "high")))
    dag_file = tmp_path / "dags" / "loyalty_p0_checks.py"
    dag_file.parent.mkdir()
    dag_file.write_text(textwrap.dedent(f"""
        # airflow DAG
        from loyalty_checks.catalog import load_catalog
        from loyalty_checks.factory import build_dag
        dag = build_dag("P0", load_catalog({str(catalog_file)!r}))
    """))
    bag = DagBag(dag_folder=str(dag_file.parent))
    [error] = bag.import_errors.values()
    assert "CatalogError" in error
    assert "check 'google_wallet_down', field 'threshold': expected an integer or a number, got str 'high'" in error
    assert bag.dags == {}
