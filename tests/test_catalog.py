"""The check catalog: the shipped one is valid, and every kind of mistake is reported
with the file, the check and the field — also as an Airflow import error."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import yaml

from loyalty_checks.catalog import DEFAULT_CATALOG, CatalogError, load_catalog, parse_catalog

CONTRACT_IDS = {
    "P0": ["expiration_task_stale", "google_wallet_down"],
    "P1": ["wallet_sync_failures", "email_failure_rate", "rate_limit_spikes",
           "p0_checks_stale",  # the package's own watchdog of the P0 DAG (on loyalty_monitoring_db)
           "store_transactions_drop"],  # a learned baseline (spec/baselines.md)
    "P2": ["high_churn", "low_enrollment", "low_redemption_rate", "low_cohort_retention"],
}


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(DEFAULT_CATALOG.read_text())


def test_shipped_catalog_matches_the_contract():
    """The contract's check ids per severity, in order, and its DAG ids. What each check
    does (threshold, window, no-data policy, lifecycle) is pinned by behaviour in its
    tests/checks/<id>.yaml, not re-typed here: a site that adds a check, or tunes one in
    its catalog and test, changes nothing in this file."""
    cat = load_catalog()
    for severity, ids in CONTRACT_IDS.items():
        assert [c.id for c in cat.for_severity(severity) if c.id in ids] == ids
    assert [cat.dags[s].dag_id for s in ("P0", "P1", "P2")] == [
        "loyalty_p0_checks", "loyalty_p1_checks", "loyalty_p2_checks"]
    assert cat.check("p0_checks_stale").source == "loyalty_monitoring_db"


def _mutate(raw, check_id, field, value):
    """The raw catalog with one field of one check changed; the check is named by id, not by
    position, so that a site adding a check anywhere in the list changes nothing here."""
    data = copy.deepcopy(raw)
    check = next(c for c in data["checks"] if c["id"] == check_id)
    if value is _DELETE:
        del check[field]
    else:
        check[field] = value
    return data


_DELETE = object()

BAD_CHECKS = [
    # (check id, field, value, expected message part)
    ("wallet_sync_failures", "for_runs", 0, "check 'wallet_sync_failures', field 'for_runs': must be >= 1"),
    ("wallet_sync_failures", "clear_runs", "2", "check 'wallet_sync_failures', field 'clear_runs': expected an integer"),
    ("wallet_sync_failures", "recovery_threshold", 0.08, "check 'wallet_sync_failures', field 'recovery_threshold': must be on the ok side"),
    ("wallet_sync_failures", "repeat_after", "daily", "check 'wallet_sync_failures', field 'repeat_after': expected a duration"),
    ("high_churn", "escalate_after", "1h", "check 'high_churn', field 'escalate_after': a check of the weekly digest does not escalate"),
    ("expiration_task_stale", "source", "warehouse", "check 'expiration_task_stale', field 'source': must be one of loyalty_db"),
    ("expiration_task_stale", "severity", "P3", "check 'expiration_task_stale', field 'severity': must be one of P0, P1, P2, got 'P3'"),
    ("expiration_task_stale", "sql", "p0/missing.sql", "check 'expiration_task_stale', field 'sql': SQL file not found"),
    ("expiration_task_stale", "sql", "../checks.yaml", "check 'expiration_task_stale', field 'sql': must be a .sql file under"),
    ("google_wallet_down", "threshold", "0.5", "check 'google_wallet_down', field 'threshold': expected an integer or a number, got str '0.5'"),
    ("google_wallet_down", "threshold", True, "check 'google_wallet_down', field 'threshold': expected an integer or a number, got a boolean"),
    ("wallet_sync_failures", "window", "1 hour", "check 'wallet_sync_failures', field 'window': expected a duration like"),
    ("wallet_sync_failures", "comparison", "=>", "check 'wallet_sync_failures', field 'comparison': must be one of >, >=, <, <="),
    ("email_failure_rate", "no_data", "alert", "check 'email_failure_rate', field 'no_data': must be one of fire, ok"),
    ("rate_limit_spikes", "entity", "customer", "check 'rate_limit_spikes', field 'entity': must be one of null, store"),
    ("rate_limit_spikes", "no_data", "fire", "check 'rate_limit_spikes', field 'no_data': 'fire' needs a check without entities"),
    ("rate_limit_spikes", "thresold", 3, "check 'rate_limit_spikes': unknown field 'thresold'"),
    ("high_churn", "action", "  ", "check 'high_churn', field 'action': must not be empty"),
    ("high_churn", "title", _DELETE, "check 'high_churn', field 'title': is required"),
    ("low_enrollment", "params", {"t": 1}, "check 'low_enrollment', field 'params': parameter name 't'"),
    ("low_enrollment", "params", {"x": [1]}, "check 'low_enrollment', field 'params': parameter 'x' must be text"),
    ("low_redemption_rate", "id", "Low-Redemption", "check 'Low-Redemption', field 'id': must be lower_snake_case"),
]


@pytest.mark.parametrize("check_id,field,value,message", BAD_CHECKS, ids=[f"{b[1]}={b[2]!r}" for b in BAD_CHECKS])
def test_bad_check_names_check_and_field(raw, check_id, field, value, message):
    with pytest.raises(CatalogError) as err:
        parse_catalog(_mutate(raw, check_id, field, value), Path("include/checks.yaml"))
    assert message in str(err.value)
    assert str(err.value).startswith("include/checks.yaml: ")


def test_duplicate_id(raw):
    data = copy.deepcopy(raw)
    data["checks"].append(copy.deepcopy(next(c for c in data["checks"] if c["id"] == "expiration_task_stale")))
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
    catalog_file.write_text(yaml.safe_dump(_mutate(raw, "google_wallet_down", "threshold", "high")))
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


# ---------------------------------------------------------------- the published JSON Schema

def test_the_published_json_schema_is_generated_from_the_models():
    """include/checks.schema.json is what the models declare (regenerate it with
    `python -m loyalty_checks.catalog --schema > include/checks.schema.json`)."""
    import json

    from loyalty_checks.catalog import SCHEMA_FILE, json_schema

    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(json_schema()))


def test_the_json_schema_accepts_the_catalog_and_rejects_what_the_loader_rejects(raw):
    """An editor validating with the schema agrees with the loader on the shipped catalog and on
    the mistakes a schema can see."""
    import json

    import jsonschema

    from loyalty_checks.catalog import SCHEMA_FILE

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(raw)) == []
    for check_id, field, value, _ in BAD_CHECKS:
        if field in ("sql", "recovery_threshold", "escalate_after") or (field, value) == ("no_data", "fire"):
            continue  # need the file system or several fields: the loader's job
        bad = _mutate(raw, check_id, field, value)
        assert list(validator.iter_errors(bad)), f"the schema accepts {field}={value!r}"
        with pytest.raises(CatalogError):
            parse_catalog(bad, Path("c.yaml"))


def test_escalation_to_a_channel_the_check_already_pages_on_is_moot(raw):
    """A P0 check pages at once: its escalate_after is left unused, not an error."""
    data = _mutate(raw, "expiration_task_stale", "escalate_after", "1h")
    check = parse_catalog(data, Path("c.yaml")).check("expiration_task_stale")
    assert check.routes == ("pagerduty", "slack") and check.escalate_after is None


def test_routing_p1_to_pagerduty_changes_no_other_check(raw):
    """dags.P1.routes: [pagerduty, slack] loads although p0_checks_stale (P1) has its own
    escalate_after: it now pages at once, and nothing else had to be edited."""
    raw = copy.deepcopy(raw)
    from loyalty_checks.lifecycle import TRIGGER, channels, channels_used

    assert any(c.get("escalate_after") for c in raw["checks"] if c["severity"] == "P1")
    raw["dags"]["P1"]["routes"] = ["pagerduty", "slack"]
    cat = parse_catalog(raw, Path("c.yaml"))
    for check in cat.for_severity("P1"):
        assert check.routes == ("pagerduty", "slack") and check.escalate_after is None, check.id
        assert channels(check, TRIGGER, escalated=False) == ["pagerduty", "slack"]
        assert channels_used(check) == ["pagerduty", "slack"]


def test_an_unknown_route_names_the_registered_channels(raw):
    raw = copy.deepcopy(raw)
    raw["dags"]["P1"]["routes"] = ["pagerduty", "teams"]
    with pytest.raises(CatalogError) as err:
        parse_catalog(raw, Path("c.yaml"))
    assert str(err.value) == ("c.yaml: dags.P1, field 'routes': unknown route 'teams' (allowed: pagerduty, slack,"
                              " digest)") or "unknown route 'teams' (allowed: pagerduty, slack, digest)" in str(err.value)


@pytest.mark.parametrize("value,message", [
    ({"allowed_users": ["bob"]}, "field 'slack_actions.allowed_users': expected Slack ids like U0123ABCD, got 'bob'"),
    ({"allowed_usergroups": "S1"}, "field 'slack_actions.allowed_usergroups': expected a list of Slack ids, got str 'S1'"),
    ({"allowed_user": ["U1"]}, "unknown field 'allowed_user'"),
])
def test_slack_actions_who_may_act_is_validated(raw, value, message):
    raw = copy.deepcopy(raw)
    raw["slack_actions"] = value
    with pytest.raises(CatalogError) as err:
        parse_catalog(raw, Path("c.yaml"))
    assert message in str(err.value)


def test_slack_actions_default_to_everyone_in_the_channel(raw):
    raw = copy.deepcopy(raw)
    assert parse_catalog(raw, Path("c.yaml")).slack_actions.allowed_users is None
    raw["slack_actions"] = {"allowed_users": ["U0ONCALL1"], "allowed_usergroups": ["S0ONCALL"]}
    acting = parse_catalog(raw, Path("c.yaml")).slack_actions
    assert acting.allowed_users == ("U0ONCALL1",) and acting.allowed_usergroups == ("S0ONCALL",)
