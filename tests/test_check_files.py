"""Check tests as data (spec: check-tests.md): every scenario file under tests/checks/
passes, every catalog check has one, and the runner `python -m loyalty_checks.testing`
reports wrong expectations (exit 1) and malformed files (exit 2) by file, step and field.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from loyalty_checks import testing
from loyalty_checks.catalog import catalog

from .conftest import ROOT

CHECKS_DIR = ROOT / "tests" / "checks"

# The example of check-tests.md: pending for two runs, then firing.
EXAMPLE = """\
check: rate_limit_spikes
catalog: {for_runs: 2}
given:
  merchants: [{id: 1, name: Alpha}]
  stores: [{id: 11, merchant_id: 1, name: Main St}]
steps:
  - at: 2026-11-16T10:00:00Z
    given:
      rate_limit_events:
        - {store_id: 11, occurred_at: T-30m, method: POST, path: /x, repeat: 150}
    expect:
      status: pending
      notify: []
  - at: 2026-11-16T11:00:00Z
    given:
      rate_limit_events:
        - {store_id: 11, occurred_at: T-20m, method: POST, path: /x, repeat: 130}
    expect:
      status: firing
      value: 130
      entities: {"11": 130}
      notify:
        - {event: trigger, channels: [slack], new: ["11"]}
"""
STEP1 = "steps[1] (at 2026-11-16T11:00:00Z)"


def run(paths, pg) -> tuple[int, str]:
    out = io.StringIO()
    code = testing.run([str(p) for p in paths], dsn=pg.conninfo(), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def server(pg):
    with testing.Server(pg.conninfo()) as server:
        with server.connect(server.template) as conn:
            server.known = testing.tables(conn)
        yield server


@pytest.fixture
def check_file(server, tmp_path):
    """check_file(yaml text) -> the runner's Result for that file."""
    def run_one(text: str, name: str = "case.yaml") -> testing.Result:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return testing.run_file(path, server, catalog(), server.known)
    return run_one


# ---------------------------------------------------------------- the scenario files

def test_every_catalog_check_has_a_scenario_file():
    texts = [p.read_text(encoding="utf-8") for p in CHECKS_DIR.glob("*.yaml")]
    missing = [c.id for c in catalog().checks
               if not any(re.search(rf"^check: *{c.id}\s*$", t, re.MULTILINE) for t in texts)]
    assert missing == [], f"no tests/checks/<id>*.yaml file with `check: <id>` for {missing}"


def test_scenario_files_pass_on_temporary_databases_dropped_after(pg):
    def ours() -> set[str]:
        with pg.connect() as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'loyalty_checktest%'")}

    before = ours()
    code, out = run([CHECKS_DIR], pg)
    assert code == testing.PASSED, out
    files = sorted(CHECKS_DIR.glob("*.yaml"))
    assert [line.split()[0] for line in out.splitlines()[:len(files)]] == ["ok"] * len(files), out
    assert ours() <= before


# ---------------------------------------------------------------- the runner

def test_the_example_of_the_contract_passes(check_file):
    result = check_file(EXAMPLE)
    assert (result.code, result.lines) == (testing.PASSED, [])


def test_for_runs_override_keeps_the_first_breach_pending(check_file):
    # Without `catalog: {for_runs: 2}` the first breach fires at once (P1 default for_runs 1).
    result = check_file(EXAMPLE.replace("catalog: {for_runs: 2}\n", ""))
    assert result.code == testing.FAILED
    assert result.lines[0].endswith("steps[0] (at 2026-11-16T10:00:00Z), field 'expect.status':"
                                    ' expected "pending", got "firing"')
    assert "field 'expect.notify': expected [], got " in result.lines[1]
    assert '"event": "trigger"' in result.lines[1]
    # ... and with for_runs 3 the second breach is still pending.
    result = check_file(EXAMPLE.replace("for_runs: 2", "for_runs: 3"))
    assert f"{STEP1}, field 'expect.status': expected \"firing\", got \"pending\"" in "\n".join(result.lines)


def test_a_wrong_expectation_fails_with_expected_and_actual(check_file, tmp_path):
    wrong = EXAMPLE.replace("value: 130", "value: 131").replace('{"11": 130}', '{"11": 129, "12": 101}') \
                   .replace('new: ["11"]', 'new: ["12"]')
    result = check_file(wrong)
    assert result.code == testing.FAILED
    path = tmp_path / "case.yaml"
    assert result.lines == [
        f"{path}: {STEP1}, field 'expect.value': expected 131, got 130",
        f'{path}: {STEP1}, field \'expect.entities\': expected {{"11": 129, "12": 101}}, got {{"11": 130}}',
        f'{path}: {STEP1}, field \'expect.notify\': expected [{{"event": "trigger", "channels": ["slack"],'
        f' "new": ["12"]}}], got [{{"event": "trigger", "channels": ["slack"], "new": ["11"], "firing": ["11"]}}]',
    ]


def test_entities_are_compared_in_order(check_file):
    text = EXAMPLE.replace("stores: [{id: 11, merchant_id: 1, name: Main St}]",
                           "stores: [{id: 11, merchant_id: 1, name: Main St}, {id: 12, merchant_id: 1, name: B}]") \
                  .replace("repeat: 130}", "repeat: 130}\n        - {store_id: 12, occurred_at: T-5m, method: GET,"
                                           " path: /y, repeat: 140}") \
                  .replace('entities: {"11": 130}', 'entities: {"11": 130, "12": 140}') \
                  .replace("value: 130", "value: 140").replace('new: ["11"]', 'new: ["12"]')
    result = check_file(text)
    assert result.code == testing.FAILED
    assert result.lines[0].endswith('field \'expect.entities\': expected {"11": 130, "12": 140},'
                                    ' got {"12": 140, "11": 130}')


def test_value_tolerance_is_relative(check_file):
    assert check_file(EXAMPLE.replace("value: 130", "value: 130.0001")).code == testing.PASSED
    assert check_file(EXAMPLE.replace("value: 130", "value: 130.001")).code == testing.FAILED


def test_a_failing_sql_is_status_error_and_reported_once(check_file):
    # Another check's SQL lacks the entity columns: the measurement fails, as in the DAGs.
    text = EXAMPLE.replace("catalog: {for_runs: 2}", "catalog: {sql: p1/email_failure_rate.sql}") \
                  .replace("status: pending\n      notify: []",
                           "status: error\n      notify: [{event: error, channels: [slack]}]") \
                  .replace("status: firing\n      value: 130\n      entities: {\"11\": 130}\n      notify:\n"
                           "        - {event: trigger, channels: [slack], new: [\"11\"]}",
                           "status: error\n      value: null\n      notify: []")
    result = check_file(text)
    assert (result.code, result.lines) == (testing.PASSED, [])
    result = check_file(text.replace("status: error\n      value: null", "status: ok"))
    assert result.code == testing.FAILED
    assert "expected \"ok\", got \"error\"" in result.lines[0]
    assert "the check could not be evaluated: " in result.lines[1]


def test_the_catalog_file_of_loyalty_checks_catalog_is_used(check_file, tmp_path, monkeypatch):
    text = (ROOT / "include" / "checks.yaml").read_text(encoding="utf-8")
    site = tmp_path / "site-checks.yaml"
    site.write_text(text.replace("threshold: 100\n", "threshold: 200\n"), encoding="utf-8")
    assert text.count("threshold: 100\n") == 1
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(site))
    result = check_file(EXAMPLE)  # 130 per minute is no breach under a threshold of 200
    assert result.code == testing.FAILED
    assert f"{STEP1}, field 'expect.status': expected \"firing\", got \"ok\"" in "\n".join(result.lines)


MALFORMED = [
    ("unknown table", ("rate_limit_events:\n        - {store_id: 11, occurred_at: T-20m",
                       "rate_limit_eventz:\n        - {store_id: 11, occurred_at: T-20m"),
     f"{STEP1}, field 'given.rate_limit_eventz': unknown table 'rate_limit_eventz'"),
    ("unknown column", ("occurred_at: T-20m, method: POST", "occurred_at: T-20m, verb: POST"),
     f"{STEP1}, field 'given.rate_limit_events[0].verb': unknown column 'verb' of table 'rate_limit_events'"),
    ("unknown top-level table", ("merchants: [", "merchant: ["),
     "before the steps, field 'given.merchant': unknown table 'merchant'"),
    ("bad relative time", ("occurred_at: T-20m", "occurred_at: T-20x"),
     f"{STEP1}, field 'given.rate_limit_events[0].occurred_at': bad time 'T-20x'"),
    ("bad step time", ("at: 2026-11-16T11:00:00Z", "at: 2026-11-16T25:00:00Z"),
     "steps[1], field 'at': bad time '2026-11-16T25:00:00Z'"),
    ("unknown check", ("check: rate_limit_spikes", "check: rate_limit_spike"),
     "field 'check': unknown check 'rate_limit_spike' (known: expiration_task_stale,"),
    ("bad event name", ("event: trigger", "event: fire"),
     f"{STEP1}, field 'expect.notify[0].event': Input should be 'trigger', 'update', 'reminder', 'escalate',"
     " 'resolve', 'error' or 'error_resolve', got 'fire'"),
    ("bad channel", ("channels: [slack]", "channels: [email]"),
     f"{STEP1}, field 'expect.notify[0].channels[0]': unknown channel 'email' (registered: pagerduty, slack)"),
    ("unknown expect field", ("value: 130", "valeu: 130"),
     f"{STEP1}, field 'expect.valeu': unknown field (allowed: status, value, entities, notify)"),
    ("bad status", ("status: pending", "status: pendin"),
     "steps[0] (at 2026-11-16T10:00:00Z), field 'expect.status': Input should be 'ok', 'pending', 'firing',"),
    ("bad override", ("for_runs: 2", "for_runs: 0"),
     "field 'catalog'"),  # then the catalog's own words, e.g. "field 'for_runs': must be >= 1"
    ("unknown override", ("for_runs: 2", "for_run: 2"), "field 'catalog'"),
    ("bad repeat", ("repeat: 130", "repeat: 0"),
     f"{STEP1}, field 'given.rate_limit_events[0].repeat': expected an integer from 1 to 100000, got 0"),
    ("refused row", ("{id: 11, merchant_id: 1,", "{id: 11, merchant_id: 2,"),
     "before the steps, field 'given.stores[0]': stores refused the row: insert or update on table \"stores\""
     " violates foreign key constraint"),
    ("unknown top-level field", ("check: rate_limit_spikes\n", "check: rate_limit_spikes\nowner: me\n"),
     "field 'owner': unknown field (allowed: check, description, catalog, given, steps)"),
    ("no steps", ("steps:", "stepz:"), "field 'steps': is required"),
    ("duplicate key", ("    given:\n      rate_limit_events:\n        - {store_id: 11, occurred_at: T-20m",
                       "    given:\n      rate_limit_events: []\n      rate_limit_events:\n"
                       "        - {store_id: 11, occurred_at: T-20m"),
     "not valid YAML: line 17: duplicate key 'rate_limit_events'"),
    ("not YAML", ("steps:\n", "steps:\n  - {at: [\n"), "not valid YAML: line "),
]


@pytest.mark.parametrize("mutation, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_file_is_reported_by_file_step_and_field(check_file, tmp_path, mutation, message):
    old, new = mutation
    assert old in EXAMPLE
    result = check_file(EXAMPLE.replace(old, new, 1))
    assert result.code == testing.MALFORMED
    assert len(result.lines) == 1
    assert result.lines[0].startswith(f"{tmp_path / 'case.yaml'}: "), result.lines[0]
    assert message in result.lines[0]
    if message == "field 'catalog'":
        assert re.search(r"'for_runs?'", result.lines[0]), result.lines[0]


# ---------------------------------------------------------------- the command line

def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    return subprocess.run([sys.executable, "-m", "loyalty_checks.testing", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_status_and_output(pg, tmp_path):
    good, wrong, bad = tmp_path / "good.yaml", tmp_path / "wrong.yaml", tmp_path / "bad.yaml"
    good.write_text(EXAMPLE, encoding="utf-8")
    wrong.write_text(EXAMPLE.replace("value: 130", "value: 131"), encoding="utf-8")
    bad.write_text(EXAMPLE.replace("rate_limit_events:\n        - {store_id: 11, occurred_at: T-20m",
                                   "no_such_table:\n        - {store_id: 11, occurred_at: T-20m"), encoding="utf-8")

    # The default server: LOYALTY_PG_URI, else an embedded PostgreSQL of its own.
    done = cli(str(good))
    assert (done.returncode, done.stdout.splitlines()[0]) == (0, f"ok      {good}"), done.stdout + done.stderr

    done = cli("--dsn", pg.conninfo(), str(good), str(wrong))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[:3] == [
        f"ok      {good}", f"FAILED  {wrong}",
        f"  {wrong}: {STEP1}, field 'expect.value': expected 131, got 130"]

    done = cli("--dsn", pg.conninfo(), str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"FAILED  {bad}\n  {bad}: {STEP1}, field 'given.no_such_table': unknown table 'no_such_table'" \
        in done.stdout

    done = cli("--dsn", pg.conninfo(), str(tmp_path / "missing.yaml"))
    assert (done.returncode, done.stdout.strip()) == (2, f"{tmp_path / 'missing.yaml'}: no such file or folder")
