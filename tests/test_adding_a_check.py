"""Adding a check is four files (README "Adding a check"), proved on a copy of the repository.

A site adds `staff_points_adjustments` (P1, per merchant) by writing only its catalog entry,
its SQL file, its runbook section and its YAML test into a copy of this working tree, and
nothing else. Then, in that copy: `python -m loyalty_checks.testing` passes the YAML test
(and exits 1 on a wrong expectation, 2 on an unknown table); the tests that hold the
catalog, the SQL files, the runbooks and the docs together accept the new check; and
`airflow dags test loyalty_p1_checks <T>` alerts on it in Slack. The rest of the suite
derives from the catalog the same way (nothing in it names a check a site may add).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import ROOT, connection_env

CHECK_ID = "staff_points_adjustments"
T = dt.datetime(2026, 11, 16, 12, 0, tzinfo=dt.timezone.utc)

# ---------------------------------------------------------------- the four files

CATALOG_ENTRY = """\
  - id: staff_points_adjustments
    severity: P1
    title: Staff points adjustments
    description: >-
      A merchant's manual points adjustments (points_adjust) moved more than 10,000
      points, in either direction, within the last hour.
    sql: p1/staff_points_adjustments.sql
    metric: points moved by points_adjust transactions in the window, per merchant
    unit: points
    comparison: ">"
    threshold: 10000
    window: 1h
    params: {kind: points_adjust}
    no_data: ok
    entity: merchant
    action: Confirm the adjustments with the merchant, look for a compromised staff account

"""

SQL = """\
-- staff_points_adjustments (P1): per merchant, the points moved (absolute values) by the
-- transactions of kind %(kind)s created in (T - window, T].
--   entity  the merchant (entity_id = merchant id, entity_name = merchant name)
--   no data no adjustment in the window (no row)
-- Reads: loyalty_transactions_kind_created_at_idx (the window's adjustments).
WITH window_adjustments AS (
    SELECT t.merchant_id, t.card_id, t.points
    FROM loyalty_transactions AS t
    WHERE t.kind = %(kind)s
      AND t.created_at > %(t)s::timestamptz - %(window)s
      AND t.created_at <= %(t)s::timestamptz
),
per_merchant AS (
    SELECT merchant_id, count(*) AS adjustments, sum(abs(points)) AS points_moved,
           count(DISTINCT card_id) AS cards
    FROM window_adjustments
    GROUP BY merchant_id
)
SELECT m.id AS entity_id, m.name AS entity_name, p.points_moved AS value, p.adjustments, p.cards
FROM per_merchant AS p
JOIN merchants AS m ON m.id = p.merchant_id
ORDER BY value DESC, entity_id;
"""

RUNBOOK_SECTION = """
## staff_points_adjustments

P1, Slack. *Notification says "could not be evaluated"? See [Could not be evaluated](#could-not-be-evaluated).*

**What it means**
Per merchant (entity = merchant): the points moved by manual adjustments
(`kind = 'points_adjust'`, credits and debits as absolute values) created in the last
hour, (T - 1h, T] (catalog `window: 1h`). Fires for a merchant when that is `> 10000`
(catalog `threshold: 10000`). No adjustment in the window: does not fire (`no_data: ok`).

**Impact**
Adjustments bypass the earn rules: a burst of them is a bulk correction or a misused staff account.

**Action**
> Confirm the adjustments with the merchant, look for a compromised staff account

**Investigate**
```sql
-- 1. the metric per merchant in the window
SELECT merchant_id, count(*) AS adjustments, sum(abs(points)) AS points_moved
FROM loyalty_transactions
WHERE kind = 'points_adjust' AND created_at > :t - interval '1 hour' AND created_at <= :t
GROUP BY merchant_id ORDER BY points_moved DESC;

-- 2. the adjusted cards
SELECT merchant_id, card_id, count(*) AS adjustments, sum(points) AS net_points
FROM loyalty_transactions
WHERE kind = 'points_adjust' AND created_at > :t - interval '1 hour' AND created_at <= :t
GROUP BY 1, 2 ORDER BY abs(sum(points)) DESC LIMIT 50;
```

**Resolves when**
An hourly run in which no merchant's adjustments over the last hour moved more than 10,000 points.
"""

YAML_TEST = """\
check: staff_points_adjustments
given:
  merchants: [{id: 1, name: Alpha}, {id: 2, name: Beta}]
  loyalty_programs:
    - {id: 1, merchant_id: 1, program_type: points, is_active: true, created_at: 2026-01-01T00:00:00Z}
    - {id: 2, merchant_id: 2, program_type: points, is_active: true, created_at: 2026-01-01T00:00:00Z}
  loyalty_cards:
    - {id: 11, program_id: 1, merchant_id: 1, is_active: true, enrolled_at: 2026-02-01T00:00:00Z}
    - {id: 21, program_id: 2, merchant_id: 2, is_active: true, enrolled_at: 2026-02-01T00:00:00Z}
steps:
  - at: 2026-11-16T10:00:00Z          # earns are no adjustments: no data
    given:
      loyalty_transactions:
        - {card_id: 11, merchant_id: 1, kind: points_earn, points: 50000, created_at: T-10m}
    expect: {status: no_data, value: null, entities: {}, notify: []}
  - at: 2026-11-16T11:00:00Z          # Alpha exactly 10000 (+6000 - 4000): ok; T-1h and after T not seen
    given:
      loyalty_transactions:
        - {card_id: 11, merchant_id: 1, kind: points_adjust, points: 6000, created_at: T-40m}
        - {card_id: 11, merchant_id: 1, kind: points_adjust, points: -4000, created_at: T-20m}
        - {card_id: 21, merchant_id: 2, kind: points_adjust, points: 90000, created_at: T-1h}
        - {card_id: 21, merchant_id: 2, kind: points_adjust, points: 12000, created_at: T+10m}
    expect: {status: ok, value: 10000, entities: {}, notify: []}
  - at: 2026-11-16T12:00:00Z          # Beta 12000 + 3000, Alpha 10001: both fire, the worst first
    given:
      loyalty_transactions:
        - {card_id: 21, merchant_id: 2, kind: points_adjust, points: -3000, created_at: T-30m}
        - {card_id: 11, merchant_id: 1, kind: points_adjust, points: 10001, created_at: T}
    expect:
      status: firing
      value: 15000
      entities: {"2": 15000, "1": 10001}
      notify: [{event: trigger, channels: [slack], new: ["2", "1"], firing: ["2", "1"]}]
  - at: 2026-11-16T13:00:00Z          # nothing in the window: no data counts as ok, resolved
    expect:
      status: no_data
      notify: [{event: resolve, channels: [slack], recovered: ["1", "2"]}]
"""

# What a site must not need: everything else of the repository is copied as it is.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".demo", ".bench", ".ruff_cache", ".hypothesis",
                                    ".pytest_cache", "__pycache__", "*.pyc")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A copy of the working tree with the four files of the new check written into it."""
    from loyalty_checks.catalog import catalog as shipped

    if CHECK_ID in {c.id for c in shipped().checks}:
        pytest.skip(f"{CHECK_ID} is in the catalog already: nothing to add")
    copy = tmp_path_factory.mktemp("site") / "repo"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    catalog = copy / "include" / "checks.yaml"
    text = catalog.read_text(encoding="utf-8")
    assert text.count("\nchecks:\n") == 1
    # first in the list: no test may count on a check's position
    catalog.write_text(text.replace("\nchecks:\n", "\nchecks:\n" + CATALOG_ENTRY, 1), encoding="utf-8")
    (copy / "include" / "sql" / "p1" / f"{CHECK_ID}.sql").write_text(SQL, encoding="utf-8")
    runbooks = copy / "docs" / "runbooks.md"
    runbooks.write_text(runbooks.read_text(encoding="utf-8").rstrip("\n") + "\n" + RUNBOOK_SECTION, encoding="utf-8")
    (copy / "tests" / "checks" / f"{CHECK_ID}.yaml").write_text(YAML_TEST, encoding="utf-8")
    return copy


def site_env(site: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell in the copy: its own plugins first, no test settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AIRFLOW") and k not in ("LOYALTY_CHECKS_CATALOG", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site / "plugins")
    return {**env, **extra}


def runner(site: Path, pg, *paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loyalty_checks.testing", "--dsn", pg.conninfo(), *paths],
                          cwd=site, env=site_env(site), capture_output=True, text=True, timeout=120)


def test_the_runner_passes_the_new_checks_yaml_test(site, pg):
    out = runner(site, pg, f"tests/checks/{CHECK_ID}.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].split() == ["ok", f"tests/checks/{CHECK_ID}.yaml"]


def test_the_runner_fails_a_wrong_expectation_and_names_an_unknown_table(site, pg, tmp_path):
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(YAML_TEST.replace("value: 15000", "value: 14000"), encoding="utf-8")
    out = runner(site, pg, str(wrong))
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(r"field 'expect.value': expected 14000, got 15000", out.stdout), out.stdout

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(YAML_TEST.replace("  loyalty_cards:\n", "  loyalty_card:\n"), encoding="utf-8")
    out = runner(site, pg, str(unknown))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "'loyalty_card'" in out.stdout and "1 malformed" in out.stdout, out.stdout


def test_the_tests_that_hold_the_repository_together_accept_it(site):
    """Catalog, SQL files, runbooks, docs and scenario files: the tests that would have demanded
    a fifth file (a re-typed threshold, a docs entry, a Python scenario) pass in the copy."""
    tests = ["tests/test_runbooks.py", "tests/test_catalog.py", "tests/test_docs.py",
             "tests/test_check_files.py::test_every_catalog_check_has_a_scenario_file",
             "tests/sql/test_checks_sql.py::test_every_catalog_sql_file_is_covered",
             "tests/sql/test_checks_sql.py::test_sql_never_reads_the_wall_clock",
             "tests/sql/test_checks_sql.py::test_sql_never_selects_personal_data"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-x", *tests],
                         cwd=site, env=site_env(site), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    # the new check was really there: its own runbook cases ran and passed
    assert re.search(rf"test_section_quotes_the_catalog_action\[{CHECK_ID}\] PASSED", out.stdout), out.stdout[-4000:]


def test_the_p1_dag_alerts_on_it(site, pg, db, loyalty_db, sink, tmp_path, airflow_db):
    """`airflow dags test loyalty_p1_checks <T>` in the copy, against rows that breach: one Slack
    message about the new check, linking its runbook section, and nothing else."""
    db.execute("INSERT INTO merchants (id, name) VALUES (1, 'Alpha')")
    db.execute("INSERT INTO loyalty_programs (id, merchant_id, program_type, is_active, created_at)"
               " VALUES (1, 1, 'points', true, %s)", (T - dt.timedelta(days=300),))
    db.execute("INSERT INTO loyalty_cards (id, program_id, merchant_id, is_active, enrolled_at)"
               " VALUES (11, 1, 1, true, %s)", (T - dt.timedelta(days=200),))
    db.execute("INSERT INTO loyalty_transactions (card_id, merchant_id, kind, points, created_at)"
               " VALUES (11, 1, 'points_adjust', 25000, %s)", (T - dt.timedelta(minutes=20),))
    home = tmp_path / "airflow"
    env = site_env(site, **{
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(site / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(site / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        **connection_env(pg, loyalty_db, sink.url),
    })
    home.mkdir()  # a copy of the session's migrated metadata database (saves `airflow db migrate`),
    # consistent with what is still in its write-ahead log
    session_db = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with closing(sqlite3.connect(session_db)) as source, closing(sqlite3.connect(home / "airflow.db")) as target:
        source.backup(target)
    out = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "loyalty_p1_checks", T.isoformat()],
                         env=env, cwd=site, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert re.findall(r"DagRun Finished: .*?state=(\w+)", log)[-1:] == ["success"], log[-4000:]
    assert f"{CHECK_ID}.measure" in log
    requests = sink.take()
    ours = [r for r in requests if f"docs/runbooks.md#{CHECK_ID}" in json.dumps(r["body"])]
    assert [r["path"] for r in ours] == ["/slack/alerts"], requests
    body = ours[0]["body"]
    assert body["text"].startswith("[P1] FIRING: Staff points adjustments"), body["text"]
    assert "Alpha" in json.dumps(body)
    # a P1 trigger goes to Slack only: nothing pages
    assert not [r for r in requests if r["path"].startswith("/pagerduty")], requests
