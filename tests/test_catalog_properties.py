"""Property-based catalog validation (hypothesis): any generated valid catalog loads;
any single invalid field of any check gives a CatalogError naming that check and field."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_checks.catalog import DEFAULT_CATALOG, CatalogError, parse_catalog

BASE = yaml.safe_load(DEFAULT_CATALOG.read_text())
SQL_FILES = [c["sql"] for c in BASE["checks"]]

ids = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
durations = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999), st.sampled_from("smhdw"))
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


@st.composite
def checks(draw, check_id):
    severity = draw(st.sampled_from(["P0", "P1", "P2"]))
    comparison = draw(st.sampled_from([">", ">=", "<", "<="]))
    threshold = draw(numbers)
    entity = draw(st.sampled_from([None, "store", "merchant", "provider"]))
    check = {
        "id": check_id, "severity": severity, "title": draw(st.text(min_size=1).filter(str.strip)),
        "description": "d", "sql": draw(st.sampled_from(SQL_FILES)), "metric": "m", "unit": "ratio",
        "comparison": comparison, "threshold": threshold, "window": draw(st.one_of(st.none(), durations)),
        "params": draw(st.dictionaries(ids.filter(lambda k: k not in ("t", "window")),
                                       st.one_of(st.integers(), st.text(max_size=5), durations), max_size=3)),
        "no_data": draw(st.sampled_from(["ok", "keep"] + ([] if entity else ["fire"]))),
        "entity": entity, "action": "a",
    }
    if draw(st.booleans()):
        check["for_runs"] = draw(st.integers(1, 10))
        check["clear_runs"] = draw(st.integers(1, 10))
        check["repeat_after"] = draw(st.one_of(st.none(), durations))
    if severity == "P1" and draw(st.booleans()):
        check["escalate_after"] = draw(durations)
    return check


@st.composite
def catalogs(draw):
    check_ids = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    data = copy.deepcopy(BASE)
    data["checks"] = [draw(checks(cid)) for cid in check_ids]
    # Enough loyalty_db slots for every measure in one wave: the whole-run budget of a
    # shipped P0 fits 4 worst-case checks per wave, and this test is about fields.
    data["db_pool_slots"] = draw(st.integers(len(check_ids), 12))
    return data


# One invalid value per field, each with the words the error must contain.
INVALID = {
    "severity": (st.sampled_from(["P3", "p0", "", 0]), "must be one of"),
    "comparison": (st.sampled_from(["=", "==", "!=", "gt", None]), "must be one of"),
    "threshold": (st.one_of(st.text(max_size=4), st.booleans(), st.none(), st.lists(st.integers(), max_size=1)),
                  ""),
    "window": (st.sampled_from(["1 hour", "5", "h1", "-5m", 60]), "expected a duration"),
    "no_data": (st.sampled_from(["alert", "", "none", True]), "must be one of"),
    "entity": (st.sampled_from(["customer", "card", ""]), "must be one of"),
    "sql": (st.sampled_from(["p0/missing.sql", "../checks.yaml", "/etc/passwd", "p0"]), ""),
    "for_runs": (st.one_of(st.integers(-5, 0), st.text(min_size=1, max_size=3)), "for_runs"),
    "repeat_after": (st.sampled_from(["daily", "1 day", "7"]), "expected a duration"),
    "action": (st.sampled_from(["", "   ", None]), ""),
    "bogus_field": (st.integers(), "unknown field 'bogus_field'"),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs())
def test_generated_valid_catalogs_load(data):
    cat = parse_catalog(data, Path("gen.yaml"))
    assert [c.id for c in cat.checks] == [c["id"] for c in data["checks"]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), st.data())
def test_one_bad_field_names_the_check_and_the_field(data, draw):
    index = draw.draw(st.integers(0, len(data["checks"]) - 1))
    field = draw.draw(st.sampled_from(sorted(INVALID)))
    strategy, words = INVALID[field]
    check = data["checks"][index]
    check[field] = draw.draw(strategy)
    try:
        parse_catalog(data, Path("gen.yaml"))
    except CatalogError as err:
        message = str(err)
        assert message.startswith("gen.yaml: ")
        assert f"check {check['id']!r}" in message
        assert f"'{field}'" in message
        assert words in message
    else:
        raise AssertionError(f"{field}={check[field]!r} was accepted")


@settings(max_examples=30, deadline=None)
@given(catalogs())
def test_duplicate_ids_are_named(data):
    data["checks"].append(copy.deepcopy(data["checks"][0]))
    try:
        parse_catalog(data, Path("gen.yaml"))
    except CatalogError as err:
        assert f"check {data['checks'][0]['id']!r}, field 'id': duplicate check id" in str(err)
    else:
        raise AssertionError("a duplicate id was accepted")
