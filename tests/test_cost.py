"""What a run costs stays linear in its checks (issue 16): a task process builds only its
own check's tasks; a warm worker parent preloads without touching a database or the
network; a site catalog brings its own SQL folder. The CPU figures themselves come from
`make bench-cost` (bench/cost.py, docs/performance.md), never from a timed test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bench.cost import write_catalog
from loyalty_checks.catalog import CatalogError, load_catalog
from tests.conftest import ROOT
from tests.io_guard import NO_IO_PRELUDE
from tests.sql.rows import MIN, T

P0, P2 = "loyalty_p0_checks", "loyalty_p2_checks"
GROUP_TASKS = ("measure", "decide", "notify_pagerduty", "notify_slack", "report_error")


@pytest.fixture(scope="module")
def site_catalog(tmp_path_factory):
    """A generated site catalog of 50 P0 checks, with its own SQL folder outside the package."""
    return write_catalog(tmp_path_factory.mktemp("site"), 50)


def parse_as(monkeypatch, catalog_file, dag_file: str, dag_id: str | None, task_id: str | None):
    """The DAG as a task process of (dag_id, task_id) parses it: Airflow's parsing context is
    these two environment variables (set here by monkeypatch, which also removes them again;
    Airflow's own context manager leaves them behind when they were unset)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID, _AIRFLOW_PARSING_CONTEXT_TASK_ID

    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(catalog_file))
    for name, value in ((_AIRFLOW_PARSING_CONTEXT_DAG_ID, dag_id), (_AIRFLOW_PARSING_CONTEXT_TASK_ID, task_id)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(ROOT / "dags" / dag_file))
    assert bag.import_errors == {}
    return next(iter(bag.dags.values()))


def test_the_dag_processor_builds_every_check(monkeypatch, site_catalog):
    dag = parse_as(monkeypatch, site_catalog, "loyalty_p0_checks.py", None, None)
    assert len(dag.task_group.children) == 50 + 2  # the groups, heartbeat and heartbeat_failed
    assert len(dag.tasks) == 50 * len(GROUP_TASKS) + 2
    assert "`bench_check_050`" in dag.doc_md


@pytest.mark.parametrize("task", GROUP_TASKS)
def test_a_task_process_builds_only_its_own_task(monkeypatch, site_catalog, task):
    dag = parse_as(monkeypatch, site_catalog, "loyalty_p0_checks.py", P0, f"bench_check_017.{task}")
    assert dag.task_ids == [f"bench_check_017.{task}"]  # in its group, without any other check's tasks
    assert dag.doc_md is None  # nobody reads a task process's doc
    full = parse_as(monkeypatch, site_catalog, "loyalty_p0_checks.py", None, None)
    alone, whole = dag.get_task(f"bench_check_017.{task}"), full.get_task(f"bench_check_017.{task}")
    for name in ("execution_timeout", "retries", "retry_delay", "trigger_rule", "pool", "doc_md"):
        assert getattr(alone, name) == getattr(whole, name), name  # the same task as the scheduler's


def test_the_measure_task_alone_reads_its_sql_from_the_sites_folder(monkeypatch, site_catalog):
    dag = parse_as(monkeypatch, site_catalog, "loyalty_p0_checks.py", P0, "bench_check_017.measure")
    # The template file is read from the site's folder (BundleDagBag resolves it at parse).
    assert dag.get_task("bench_check_017.measure").sql == (
        site_catalog.parent / "sql" / "p0" / "bench_check_017.sql").read_text()
    assert dag.template_searchpath == [str(site_catalog.parent / "sql")]


@pytest.mark.parametrize(("dag_file", "task"), [("loyalty_p0_checks.py", "heartbeat"),
                                                ("loyalty_p0_checks.py", "heartbeat_failed"),
                                                ("loyalty_p2_checks.py", "post_digest"),
                                                ("loyalty_p2_checks.py", "low_enrollment.measure")])
def test_a_run_level_task_or_a_p2_task_builds_itself_alone(monkeypatch, site_catalog, dag_file, task):
    dag = parse_as(monkeypatch, site_catalog, dag_file, P2 if "p2" in dag_file else P0, task)
    assert dag.task_ids == [task]


def test_a_task_process_of_another_dag_builds_this_one_whole(monkeypatch, site_catalog):
    """The context names another DAG (a file with several DAGs, or a test): nothing is left out."""
    dag = parse_as(monkeypatch, site_catalog, "loyalty_p0_checks.py", "loyalty_p1_checks", "x.measure")
    assert len(dag.tasks) == 50 * len(GROUP_TASKS) + 2


PRELOAD_PROBE = NO_IO_PRELUDE + textwrap.dedent("""
    import os
    sys.path.insert(0, sys.argv[1])
    import airflow_local_settings  # what every Airflow process imports: registers, loads nothing
    assert "loyalty_checks.factory" not in sys.modules, "imported before any fork"
    pid = os.fork()  # the parent preloads first, as a LocalExecutor or Celery parent does
    if pid == 0:
        os._exit(0 if "loyalty_checks.factory" in sys.modules else 3)
    _, status = os.waitpid(pid, 0)
    from loyalty_checks import warm
    from loyalty_checks.catalog import _cached
    print("CHILD", os.waitstatus_to_exitcode(status), "WARM", all(m in sys.modules for m in warm.MODULES),
          "CATALOG", _cached.cache_info().currsize > 0)
    print("TOUCHED", touched)
""")


def test_a_worker_parent_preloads_before_it_forks_without_any_connection(tmp_path):
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/never-created.db"}
    out = subprocess.run([sys.executable, "-c", PRELOAD_PROBE, str(ROOT / "config")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CHILD 0 WARM True CATALOG True" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "TOUCHED []" in out.stdout, out.stdout
    assert not (tmp_path / "never-created.db").exists()


# ---------------------------------------------------------------- a site catalog's own SQL

def test_a_site_catalog_reads_its_checks_from_its_own_sql_folder(site_catalog):
    cat = load_catalog(site_catalog)
    folder = site_catalog.parent / "sql"
    assert cat.sql_dir == folder
    check = cat.check("bench_check_001")
    assert check.sql_path == folder / "p0" / "bench_check_001.sql"
    assert all(c.sql_path.is_file() and folder in c.sql_path.parents for c in cat.checks)
    assert all(m.sql_path.parent.parent == folder for m in cat.digest_metrics)


def _site(tmp_path, **changes):
    data = yaml.safe_load((ROOT / "include" / "checks.yaml").read_text())
    data.update(changes)
    path = tmp_path / "site" / "checks.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_missing_sql_folder_or_file_is_named(tmp_path):
    with pytest.raises(CatalogError, match=r"checks\.yaml, field 'sql_dir': not a folder: .*/site/nowhere"):
        load_catalog(_site(tmp_path, sql_dir="nowhere"))
    (tmp_path / "site" / "sql").mkdir()
    with pytest.raises(CatalogError, match=r"check 'expiration_task_stale', field 'sql': SQL file not found: "
                                           r".*/site/sql/p0/expiration_task_stale\.sql"):
        load_catalog(_site(tmp_path, sql_dir="sql"))


def test_a_site_check_runs_from_its_own_sql_folder(db, dagbag, airflow_conns, sink, monkeypatch, tmp_path):
    """A generated check whose SQL lives only in the site's folder runs, breaches and pages."""
    from airflow.dag_processing.dagbag import DagBag

    path = write_catalog(tmp_path, 2)
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "loyalty_p0_checks.py"))
    assert bag.import_errors == {}
    dag = bag.dags[P0]
    for task in dag.tasks:
        task.retries = 0
    db.execute("INSERT INTO celery_taskmeta (id, task_id, status, name, date_done) VALUES"
               " (1, 'a', 'FAILURE', 'bench.breach', %s), (2, 'b', 'FAILURE', 'bench.breach', %s)",
               ((T - 10 * MIN).replace(tzinfo=None), (T + MIN).replace(tzinfo=None)))
    dr = dag.test(logical_date=T)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    pages = [r["body"] for r in sink.take("/pagerduty")]
    assert sorted(p["dedup_key"] for p in pages) == ["loyalty/bench_check_001", "loyalty/bench_check_002"]
    assert {p["payload"]["custom_details"]["value"] for p in pages} == {1}  # the row after T is not seen


# ---------------------------------------------------------------- the time budget counts the checks

def _grown(tmp_path: Path, checks: int, **p0) -> Path:
    """The bench's generated catalog of `checks` P0 checks, with the shipped P0 settings (or `p0`)."""
    path = write_catalog(tmp_path, checks)
    data = yaml.safe_load(path.read_text())
    shipped = yaml.safe_load((ROOT / "include" / "checks.yaml").read_text())
    data["dags"]["P0"] = {**shipped["dags"]["P0"], **p0}
    data.pop("db_pool_slots")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_catalog_that_outgrows_its_interval_is_an_import_error_naming_the_numbers(tmp_path):
    with pytest.raises(CatalogError) as err:
        load_catalog(_grown(tmp_path, 200))
    assert str(err.value) == (
        f"{tmp_path / 'checks.yaml'}: dags.P0 (loyalty_p0_checks): 200 checks: when every check takes its worst"
        " path at once, the run takes 98m10s (the longest path 4m20s + 49 more wave(s) of measures (200 on the"
        " loyalty_db pool's 4 slots, max_active_tasks 16) × 86 s + 12 more wave(s) of reports × 118 s), longer"
        " than run_timeout 4m45s: raise db_pool_slots (and the loyalty_db pool) or max_active_tasks, lower the"
        " time limits, or split the checks into shards")


def test_the_shipped_numbers_fit_as_long_as_one_wave_does(tmp_path):
    """4 checks fill the pool's 4 slots once: the run is its longest path. A fifth needs a
    second wave of measures (86 s more at worst), which 4m20s + 86 s no longer fits."""
    assert load_catalog(_grown(tmp_path / "four", 4)).dags["P0"].max_active_tasks == 16
    with pytest.raises(CatalogError, match=r"5 checks: .* the run takes 5m46s \(the longest path 4m20s \+ 1 more"
                                           r" wave\(s\) of measures \(5 on the loyalty_db pool's 4 slots"):
        load_catalog(_grown(tmp_path / "five", 5))
