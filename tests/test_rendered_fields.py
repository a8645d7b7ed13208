"""What a `measure` task shows in the Airflow UI's "Rendered Template": the SQL, readable
(no unpaired apostrophe in a comment breaks the highlighting of the lines after it), and
beside it the values bound to %(t)s, %(window)s and the check's params for that run."""

from __future__ import annotations

import json

from loyalty_checks.catalog import catalog
from tests.sql.rows import T

P1 = "loyalty_p1_checks"


def test_apostrophes_in_sql_comments_are_shown_as_typographic_ones():
    """A site's SQL may say "the window's end" in a comment: the rendered SQL shows ’ there,
    so the highlighting of the lines after it holds; string literals are left alone."""
    from loyalty_checks.tasks import readable_sql

    sql = ("-- the window's end\nSELECT 'it''s' AS a, 'x' -- store's count\n"
           "FROM t WHERE name = '--not a comment' -- it's\n")
    assert readable_sql(sql) == ("-- the window\u2019s end\nSELECT 'it''s' AS a, 'x' -- store\u2019s count\n"
                                 "FROM t WHERE name = '--not a comment' -- it\u2019s\n")


def test_measure_renders_the_bound_values(db, run_dag):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.settings import Session

    from loyalty_checks.tasks import readable_sql

    dr, states = run_dag(P1, T)
    assert states["rate_limit_spikes.measure"] == "success"
    with Session() as session:
        ti = next(ti for ti in dr.get_task_instances(session=session) if ti.task_id == "rate_limit_spikes.measure")
        fields = RenderedTaskInstanceFields.get_templated_fields(ti, session=session)
    assert "%(t)s" in fields["sql"] and "FROM rate_limit_events" in fields["sql"]
    assert fields["sql"].strip() == readable_sql(catalog().check("rate_limit_spikes").sql_path.read_text()).strip()
    bound = json.loads(fields["bound_parameters"])
    assert bound == {"t": T.isoformat(), "window": "interval '1h'"}


def test_a_run_without_a_logical_date_binds_its_run_after(dagbag):
    """Airflow 3 runs a DAG triggered with no logical date (the REST API's `logical_date:
    null`) with no `logical_date` in the template context at all: T is then the run's
    `run_after`, as `tasks.run_time` says, instead of every measure failing to render."""
    import datetime as dt
    from types import SimpleNamespace

    dag = dagbag.get_dag(P1)
    task = dag.get_task("rate_limit_spikes.measure")
    env = dag.get_template_env()
    run_after = dt.datetime(2026, 5, 19, 12, 7, 3, tzinfo=dt.timezone.utc)
    rendered = env.from_string(task.bound_parameters).render(
        dag_run=SimpleNamespace(logical_date=None, run_after=run_after))
    assert json.loads(rendered)["t"] == run_after.isoformat()
    rendered = env.from_string(task.bound_parameters).render(
        logical_date=T, dag_run=SimpleNamespace(logical_date=T, run_after=run_after))
    assert json.loads(rendered)["t"] == T.isoformat()  # a scheduled run: its logical date


def test_bound_values_include_the_params():
    from loyalty_checks.tasks import bound_parameters_template

    check = catalog().check("p0_checks_stale")
    bound = json.loads(bound_parameters_template(check))
    assert bound["window"] is None
    assert {k: bound[k] for k in check.params} == dict(check.params)


def test_a_baseline_checks_bound_values_are_what_its_sql_gets():
    from loyalty_checks.measure import sql_parameters
    from loyalty_checks.tasks import bound_parameters_template

    check = catalog().check("store_transactions_drop")
    bound = json.loads(bound_parameters_template(check))
    assert {k: bound[k] for k in ("window", "baseline_window", "min_expected")} == {
        "window": "interval '28d 3h'", "baseline_window": "interval '3h'", "min_expected": 12}
    assert set(bound) == set(sql_parameters(check, T))
