"""docs/runbooks.md keeps step with the check catalog.

Every notification links to `<runbook_url>#<check id>`, so every check needs exactly one
`## <check id>` section (GitHub's anchor for that heading is the id itself), and that
section must quote the catalog's action text and cite its threshold and window.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loyalty_checks.catalog import catalog
from loyalty_checks.text import format_duration

RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks.md"

# `## ` headings that are not check ids.
GENERIC_SECTIONS = {
    "How alerts link here",
    "Severity and routing",
    "Running the Investigate queries",
    "Could not be evaluated",
    "weekly_digest",
}
REQUIRED_PARTS = ("**What it means**", "**Impact**", "**Action**", "**Investigate**", "**Resolves when**")
PERSONAL_DATA_COLUMNS = ("recipient", "customer_email")

CHECKS = catalog().checks
CHECK_IDS = [c.id for c in CHECKS]


def _prose_lines(text: str) -> list[str]:
    """The document's lines outside fenced code blocks (a `## ` in SQL is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


@pytest.fixture(scope="module")
def text() -> str:
    return RUNBOOKS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def h2_headings(text) -> list[str]:
    return [line[3:].strip() for line in _prose_lines(text) if line.startswith("## ")]


@pytest.fixture(scope="module")
def sections(text) -> dict[str, str]:
    """`## <title>` → the text up to the next `## ` heading (code blocks included)."""
    out, title, body, fenced = {}, None, [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if title is not None:
                out[title] = "\n".join(body)
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


def test_catalog_has_checks():
    assert CHECK_IDS, "the catalog lists no check"


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_every_check_has_exactly_one_section(h2_headings, check_id):
    assert h2_headings.count(check_id) == 1, f"docs/runbooks.md needs exactly one '## {check_id}' heading"


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_section_anchor_is_the_check_id(text, check_id):
    """No other heading of any level may claim the same GitHub anchor (it would become `<id>-1`)."""
    anchors = [_github_anchor(line.lstrip("#")) for line in _prose_lines(text) if re.match(r"#{1,6} ", line)]
    assert anchors.count(check_id) == 1


def test_no_section_for_an_unknown_check(h2_headings):
    unknown = [h for h in h2_headings if h not in CHECK_IDS and h not in GENERIC_SECTIONS]
    assert not unknown, f"'## ' headings that are neither a catalog check nor a generic section: {unknown}"


def test_generic_sections_are_present(h2_headings):
    assert not GENERIC_SECTIONS - set(h2_headings)


def test_generic_sections_are_not_check_ids():
    assert not GENERIC_SECTIONS & set(CHECK_IDS)


@pytest.mark.parametrize("check", CHECKS, ids=CHECK_IDS)
def test_section_quotes_the_catalog_action(sections, check):
    body = sections[check.id]
    assert check.action in body, f"'## {check.id}' must quote the catalog action verbatim: {check.action!r}"
    # ... first thing under **Action**
    after = body.split("**Action**", 1)[1].lstrip()
    assert after.startswith(f"> {check.action}")


@pytest.mark.parametrize("check", CHECKS, ids=CHECK_IDS)
def test_section_has_its_parts_in_order(sections, check):
    body = sections[check.id]
    positions = []
    for part in REQUIRED_PARTS:
        assert part in body, f"'## {check.id}' lacks {part}"
        positions.append(body.index(part))
    assert positions == sorted(positions), f"'## {check.id}': parts out of order"


@pytest.mark.parametrize("check", CHECKS, ids=CHECK_IDS)
def test_section_cites_the_catalog_threshold_and_window(sections, check):
    what = sections[check.id].split("**What it means**", 1)[1].split("**Impact**", 1)[0]
    if check.baseline is not None:  # a learned threshold: its settings, as the catalog writes them
        b = check.baseline
        for setting in (f"tail: {b.tail:g}", f"min_expected: {b.min_expected:g}", f"comparison: {check.comparison}",
                        f"window: {format_duration(b.window).replace(' ', '')}",
                        f"history: {format_duration(b.history).replace(' ', '')}",
                        f"min_history: {format_duration(b.min_history).replace(' ', '')}"):
            assert f"`{setting}`" in what, f"'## {check.id}' must state `{setting}`"
        return
    assert f"`{check.comparison} {check.threshold:g}`" in what, (
        f"'## {check.id}' must state the firing condition `{check.comparison} {check.threshold:g}`")
    assert f"threshold: {check.threshold:g}`" in what
    if check.window_text:
        assert f"window: {check.window_text}`" in what


@pytest.mark.parametrize("check", CHECKS, ids=CHECK_IDS)
def test_investigate_has_read_only_queries_as_of_t(sections, check):
    investigate = sections[check.id].split("**Investigate**", 1)[1].split("**Resolves when**", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", investigate, re.S)
    assert blocks, f"'## {check.id}': Investigate needs a ```sql block"
    sql = "\n".join(blocks)
    statements = [s for s in re.split(r";\s*\n", sql) if re.search(r"\b(SELECT|WITH)\b", s, re.I)]
    assert 2 <= len(statements) <= 4, f"'## {check.id}': expected 2-4 queries, got {len(statements)}"
    assert ":t" in sql
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    assert not re.search(r"\b(INSERT|UPDATE|DELETE|TRUNCATE|ALTER|DROP|CREATE|GRANT)\b", code, re.I)


def test_no_query_selects_personal_data(text):
    sql = "\n".join(re.findall(r"```sql\n(.*?)```", text, re.S))
    for column in PERSONAL_DATA_COLUMNS:
        assert not re.search(rf"\b{column}\b", sql, re.I), f"a query names the personal data column {column}"


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_catalog_runbook_link_points_at_the_section(check_id):
    link = catalog().runbook_link(check_id)
    assert link.endswith(f"docs/runbooks.md#{check_id}")
    assert link.startswith(("https://", "http://"))
