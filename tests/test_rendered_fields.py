"""What a `measure` task shows in the Airflow UI's "Rendered Template": the SQL, readable
(no unpaired apostrophe in a comment breaks the highlighting of the lines after it), and
beside it the values bound to %(t)s, %(window)s and the check's params for that run."""

from __future__ import annotations

import json
from pathlib import Path

from loyalty_checks.catalog import SQL_DIR, catalog
from tests.sql.rows import T

P1 = "loyalty_p1_checks"


def test_sql_comments_have_no_unpaired_apostrophe():
    bad = []
    for path in sorted(p for p in Path(SQL_DIR).rglob("*.sql") if p.parent.name != "schema"):  # what tasks render
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("--") and line.count("'") % 2:
                bad.append(f"{path.relative_to(SQL_DIR)}:{number}: {line.strip()}")
    assert bad == [], "use ’ for an apostrophe in a SQL comment:\n" + "\n".join(bad)


def test_measure_renders_the_bound_values(db, run_dag):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.settings import Session

    dr, states = run_dag(P1, T)
    assert states["rate_limit_spikes.measure"] == "success"
    with Session() as session:
        ti = next(ti for ti in dr.get_task_instances(session=session) if ti.task_id == "rate_limit_spikes.measure")
        fields = RenderedTaskInstanceFields.get_templated_fields(ti, session=session)
    assert "%(t)s" in fields["sql"] and "FROM rate_limit_events" in fields["sql"]
    bound = json.loads(fields["bound_parameters"])
    assert bound == {"t": T.isoformat(), "window": "interval '1h'"}


def test_bound_values_include_the_params():
    from loyalty_checks.tasks import bound_parameters_template

    check = catalog().check("p0_checks_stale")
    bound = json.loads(bound_parameters_template(check))
    assert bound["window"] is None
    assert {k: bound[k] for k in check.params} == dict(check.params)
