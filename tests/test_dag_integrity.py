"""DAG integrity: the three DAG files import cleanly, are shaped as the contract says,
and parsing them touches no database, network, connection or Variable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from loyalty_checks.catalog import catalog
from loyalty_checks.lifecycle import channels_used
from tests.conftest import ROOT
from tests.io_guard import NO_IO_PRELUDE

EXPECTED = {
    "loyalty_p0_checks": ("*/5 * * * *", timedelta(minutes=5), "P0"),
    "loyalty_p1_checks": ("0 * * * *", timedelta(hours=1), "P1"),
    "loyalty_p2_checks": ("0 8 * * 1", timedelta(weeks=1), "P2"),
}


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors_and_exactly_the_package_dags(bag):
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted([*EXPECTED, "loyalty_silences", "loyalty_backtest"])


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_schedule_and_run_settings(bag, dag_id):
    dag = bag.dags[dag_id]
    cron, interval, severity = EXPECTED[dag_id]
    spec = catalog().dags[severity]
    assert dag.timetable.expression == cron
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"  # T = the scheduled moment
    assert dag.timetable.timezone.name == "UTC"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.dagrun_timeout < interval  # a run never overlaps the next
    assert {"loyalty", "monitoring", severity} <= set(dag.tags)
    for task in dag.tasks:
        assert task.owner == spec.owner
        assert task.execution_timeout <= dag.dagrun_timeout
        if task.task_id.endswith(".measure"):
            assert task.retries == spec.retries and task.retry_delay == spec.retry_delay
    for check in catalog().for_severity(severity):
        assert f"`{check.id}`" in dag.doc_md and check.title in dag.doc_md


@pytest.mark.parametrize("dag_id", ["loyalty_p0_checks", "loyalty_p1_checks"])
def test_check_group_shape(bag, dag_id):
    dag = bag.dags[dag_id]
    severity = EXPECTED[dag_id][2]
    for check in catalog().for_severity(severity):
        g = check.id
        # A notify task per channel the check's routes may use (PagerDuty too when it escalates).
        channels = channels_used(check)
        assert channels == (["pagerduty", "slack"] if severity == "P0" or check.escalate_after is not None
                            else ["slack"])
        measure, decide = dag.get_task(f"{g}.measure"), dag.get_task(f"{g}.decide")
        assert measure.downstream_task_ids == {f"{g}.decide", f"{g}.report_error"}
        assert decide.downstream_task_ids == {f"{g}.notify_{c}" for c in channels}
        # measure decides; decide marks the branch in the grid and starts no process: an
        # EmptyOperator without callbacks, which the scheduler completes by itself.
        assert type(decide).__name__ == "EmptyOperator" and decide.inherits_from_empty_operator
        assert not (decide.on_execute_callback or decide.on_success_callback or decide.inlets or decide.outlets)
        assert dag.get_task(f"{g}.report_error").trigger_rule == "one_failed"
        assert measure.sql == check.sql_path.read_text()  # the file, rendered at run time
        assert measure.pool == ("loyalty_db" if check.source == "loyalty_db" else "default_pool")
        for c in channels:
            assert dag.get_task(f"{g}.notify_{c}").trigger_rule == "all_success"
    # No trigger rule hides a failure, and no branch feeds a join (apache/airflow#55187).
    rules = {t.task_id: t.trigger_rule for t in dag.tasks}
    assert set(rules.values()) <= {"all_success", "one_failed", "none_failed"}
    assert [k for k, v in rules.items() if v == "none_failed"] == (["heartbeat"] if severity == "P0" else [])


def test_p0_heartbeat_follows_every_check(bag):
    dag = bag.dags["loyalty_p0_checks"]
    group_leaves = {f"{c.id}.{t}" for c in catalog().for_severity("P0")
                    for t in ("notify_pagerduty", "notify_slack", "report_error")}
    for name, rule in (("heartbeat", "none_failed"), ("heartbeat_failed", "one_failed")):
        task = dag.get_task(name)
        assert task.trigger_rule == rule
        assert task.upstream_task_ids == group_leaves


def test_silences_dag_params(bag):
    dag = bag.dags["loyalty_silences"]
    assert dag.timetable.__class__.__name__ == "NullTimetable"
    assert set(dag.params) == {"action", "check_id", "entity_id", "duration", "until", "starts_at", "reason",
                               "author", "silence_id"}
    assert dag.params.get_param("check_id").schema["enum"] == [None, *(c.id for c in catalog().checks)]
    assert dag.params["check_id"] is None  # no preselected check: a silence names its check on purpose


def test_backtest_dag_params(bag):
    dag = bag.dags["loyalty_backtest"]
    assert dag.timetable.__class__.__name__ == "NullTimetable"
    assert set(dag.params) == {"check", "start", "end", "overrides", "sweep", "requested_by"}
    assert dag.params.get_param("check").schema["enum"] == [c.id for c in catalog().checks]
    assert [t.task_id for t in dag.tasks] == ["backtest"] and dag.tasks[0].retries == 0


def test_p2_digest_shape(bag):
    dag = bag.dags["loyalty_p2_checks"]
    post = dag.get_task("post_digest")
    watcher = dag.get_task("fail_if_any_failed")
    assert post.trigger_rule == "all_done" and watcher.trigger_rule == "one_failed"
    checks = [c.id for c in catalog().for_severity("P2")]
    assert post.upstream_task_ids == {f"{c}.{t}" for c in checks for t in ("evaluate", "report_error")} | {
        "digest_metrics"}
    # The watcher sees every task, so a failed check still makes the run red.
    assert watcher.upstream_task_ids >= {f"{c}.evaluate" for c in checks} | {"digest_metrics", "post_digest"}
    assert dag.leaves == [watcher] or set(t.task_id for t in dag.leaves) == {"fail_if_any_failed"}


PARSE_PROBE = NO_IO_PRELUDE + textwrap.dedent("""
    import runpy
    for path in sys.argv[1:]:
        runpy.run_path(path, run_name="probe")
    print("TOUCHED", touched)
""")


def test_parsing_does_no_database_network_connection_or_variable_access(tmp_path):
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/never-created.db"}
    files = sorted(str(p) for p in (ROOT / "dags").glob("*.py"))
    out = subprocess.run([sys.executable, "-c", PARSE_PROBE, *files], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TOUCHED []" in out.stdout, out.stdout
    assert not (tmp_path / "never-created.db").exists()


def test_dag_docs_link_the_console_and_the_grafana_dashboards(bag):
    cat = catalog()
    assert cat.grafana_url, "the shipped catalog names the compose stack's Grafana"
    for dag_id in ("loyalty_p0_checks", "loyalty_p1_checks", "loyalty_p2_checks"):
        doc = bag.dags[dag_id].doc_md
        assert f"(loyalty/?dag_id={dag_id})" in doc  # relative: works under a base_url sub-path
        for uid in ("loyalty-checks", "loyalty-platform"):  # the provisioned dashboards' uids
            assert f"({cat.grafana_url}/d/{uid})" in doc
            assert any(f'"uid": "{uid}"' in p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json"))
