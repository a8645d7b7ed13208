"""The documentation keeps step with the code: docs/lifecycle.md names every lifecycle
field, event, default and silence command the code has, and every relative link in
README.md and docs/*.md resolves (file and `#anchor`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from loyalty_checks import lifecycle, silences
from loyalty_checks.catalog import LIFECYCLE_FIELDS, NO_DATA_POLICIES, catalog, parse_duration
from loyalty_checks.messages import dedup_key
from tests.test_runbooks import _prose_lines as _prose

ROOT = Path(__file__).resolve().parents[1]
LIFECYCLE_DOC = ROOT / "docs" / "lifecycle.md"
MONITORING_SQL = ROOT / "include" / "sql" / "schema" / "monitoring.sql"
LINKED_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

EVENTS = (lifecycle.TRIGGER, lifecycle.UPDATE, lifecycle.REMINDER, lifecycle.ESCALATE, lifecycle.RESOLVE,
          lifecycle.ERROR, lifecycle.ERROR_RESOLVE)
# What a Check has when neither the check nor its severity's defaults set a field.
UNSET = {"for_runs": 1, "clear_runs": 1, "repeat_after": None, "escalate_after": None}
DEFAULTS_HEADER = ["severity", *LIFECYCLE_FIELDS]


@pytest.fixture(scope="module")
def doc() -> str:
    return LIFECYCLE_DOC.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The body of the `## heading` section (up to the next `## `)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/lifecycle.md has no '## {heading}' section"
    return match.group(1)


def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table as rows of stripped cells (separator rows dropped)."""
    tables, current = [], []
    for line in _prose(text) + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


# ---------------------------------------------------------------- lifecycle.md vs the code

@pytest.mark.parametrize("name", [*LIFECYCLE_FIELDS, "recovery_threshold", "no_data"])
def test_every_lifecycle_field_is_documented(doc, name):
    assert f"`{name}`" in doc


@pytest.mark.parametrize("policy", NO_DATA_POLICIES)
def test_every_no_data_policy_is_documented(doc, policy):
    rows = [r for t in _tables(_section(doc, "No data")) for r in t]
    assert any(r[0] == f"`{policy}`" for r in rows), f"no row for no_data `{policy}` in '## No data'"


@pytest.mark.parametrize("event", EVENTS)
def test_every_notification_event_is_documented(doc, event):
    rows = [r for t in _tables(_section(doc, "What people are told")) for r in t]
    assert any(r[0] == f"`{event}`" for r in rows), f"no row for event `{event}`"


def test_pagerduty_dedup_keys(doc):
    assert f"`{dedup_key('<id>', lifecycle.TRIGGER)}`" in doc
    assert f"`{dedup_key('<id>', lifecycle.ERROR)}`" in doc


def _cell_value(field: str, cell: str):
    """'4h' -> timedelta, 'null (never)' -> None, '1' -> 1."""
    word = cell.strip("`").split()[0].strip("`")
    if field in ("for_runs", "clear_runs"):
        return int(word)
    return None if word == "null" else parse_duration(word, f"docs/lifecycle.md defaults, {field}")


def test_defaults_table_matches_the_catalog(doc):
    cat = catalog()
    [table] = [t for t in _tables(doc) if t[0] == DEFAULTS_HEADER] or [None]
    assert table, f"docs/lifecycle.md needs a table with the header | {' | '.join(DEFAULTS_HEADER)} |"
    rows = {r[0]: r for r in table[1:]}
    assert sorted(rows) == sorted(cat.dags), "one row per severity"
    for severity, spec in cat.dags.items():
        effective = {**UNSET, **spec.defaults.model_dump(exclude_unset=True)}
        for field, cell in zip(DEFAULTS_HEADER[1:], rows[severity][1:], strict=True):
            assert _cell_value(field, cell) == effective[field], (
                f"{severity} {field}: the doc says {cell!r}, include/checks.yaml {effective[field]!r}")


def _runbook_section(check_id: str) -> str:
    """The check's `## <id>` section of docs/runbooks.md ('' without one: test_runbooks says so)."""
    text = (ROOT / "docs" / "runbooks.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(check_id)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def test_per_check_overrides_are_documented(doc):
    """A check whose lifecycle differs from its severity's defaults is named with the value, in
    docs/lifecycle.md or in its own runbook section (one of the four files of a new check)."""
    cat = catalog()
    raw = {c["id"]: c for c in yaml.safe_load(cat.path.read_text(encoding="utf-8"))["checks"]}
    for check in cat.checks:
        effective = {**UNSET, **cat.dags[check.severity].defaults.model_dump(exclude_unset=True)}
        for field in LIFECYCLE_FIELDS:
            if getattr(check, field) != effective[field]:
                said = f"`{field}: {raw[check.id][field]}`"
                assert (f"`{check.id}`" in doc and said in doc) or said in _runbook_section(check.id), (
                    f"{check.id} sets {field}: {raw[check.id][field]}; say so in docs/lifecycle.md"
                    " or in its section of docs/runbooks.md")
    assert cat.check("p0_checks_stale").escalate_after == dt.timedelta(0)


def test_no_data_users_are_named(doc):
    """A check whose no-data policy is not `ok` is named in docs/lifecycle.md's No data section,
    or its own runbook section says `no_data: <policy>`."""
    section = _section(doc, "No data")
    for check in catalog().checks:
        if check.no_data != "ok":
            assert f"`{check.id}`" in section or f"`no_data: {check.no_data}`" in _runbook_section(check.id), (
                f"{check.id} uses no_data {check.no_data}")


def _silences_parser(monkeypatch) -> argparse.ArgumentParser:
    """The parser `silences.main` builds, caught before it parses anything."""
    caught = {}

    class Caught(Exception):
        pass

    def parse_args(self, *args, **kwargs):
        caught["parser"] = self
        raise Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    with pytest.raises(Caught):
        silences.main([])
    return caught["parser"]


def test_silence_cli_subcommands_and_options(doc, monkeypatch):
    parser = _silences_parser(monkeypatch)
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"add", "list", "expire"}
    section = _section(doc, "Silences")
    for name, subparser in sub.choices.items():
        assert f"python -m loyalty_checks.silences {name}" in section
        for action in subparser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in section, f"`{name} {option}` is not documented"
    assert "--dsn" in section


def test_silences_dag_and_its_params(doc):
    from loyalty_checks.factory import build_silences_dag

    dag = build_silences_dag()
    section = _section(doc, "Silences")
    assert f"`{dag.dag_id}`" in section
    for param in dag.params:
        assert f"`{param}`" in section, f"param {param} of {dag.dag_id} is not documented"


def test_heartbeat_and_watchdog(doc):
    from loyalty_checks.connections import HEARTBEAT

    section = _section(doc, "Dead man's switch")
    for name in (HEARTBEAT, "heartbeat_failed", "fail_endpoint", "p0_checks_stale"):
        assert f"`{name}`" in section or f"**`{name}`**" in section


def test_every_monitoring_table_is_documented(doc):
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS loyalty_monitoring\.(\w+)", MONITORING_SQL.read_text())
    assert tables
    section = _section(doc, "Where the state lives")
    for table in tables:
        assert f"`{table}`" in section


def test_lifecycle_doc_stays_short(doc):
    assert len(doc.splitlines()) <= 260


# ---------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in _prose(path.read_text(encoding="utf-8"))
            if re.match(r"#{1,6} ", line)}


def _links(path: Path) -> list[str]:
    out = []
    for line in _prose(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
        out += LINK.findall(line)
        ref = REFERENCE.match(line)
        if ref:
            out.append(ref.group(1))
    return [t for t in out if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]  # http:, mailto: ...


def _relative_links() -> list[tuple[Path, str]]:
    return [(doc, target) for doc in LINKED_DOCS for target in _links(doc)]


@pytest.mark.parametrize("source,target", _relative_links(),
                         ids=[f"{s.relative_to(ROOT)}->{t}" for s, t in _relative_links()])
def test_relative_link_resolves(source, target):
    path, _, anchor = target.partition("#")
    resolved = (source.parent / path).resolve() if path else source
    assert resolved.exists(), f"{source.relative_to(ROOT)}: link to {target!r}: no such file"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), (
            f"{source.relative_to(ROOT)}: link to {target!r}: no heading with anchor #{anchor}"
            f" in {resolved.relative_to(ROOT)}")


def test_runbook_anchors_are_h2_headings():
    """In docs/runbooks.md, every `#x` link names a `## x` heading (what notifications link to)."""
    runbooks = ROOT / "docs" / "runbooks.md"
    h2 = {_anchor(line[3:]) for line in _prose(runbooks.read_text(encoding="utf-8")) if line.startswith("## ")}
    for target in _links(runbooks):
        if target.startswith("#"):
            assert target[1:] in h2, f"docs/runbooks.md links to {target} but has no such ## heading"
    for check in catalog().checks:
        assert check.id in h2, f"notifications link to runbooks.md#{check.id}"


def test_reliability_matrix_names_tests_that_exist():
    """Every `tests/<file>::<test>` cited in docs/reliability.md is a real test."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`", text)
    cited += [(file, f"::{name}") for file, name in
              re.findall(r"`(tests/[\w/]+\.py)::\w+`, `::(\w+)`", text)]
    assert len(cited) > 20
    for file, name in cited:
        assert (root / file).is_file(), file
        if name:
            assert f"def {name[2:]}(" in (root / file).read_text(encoding="utf-8"), f"{file}{name}"
