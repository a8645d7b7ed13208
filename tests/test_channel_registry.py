"""A new channel is one class registered by name: this file defines one, routes a check to
it in a site catalog, and runs the P1 DAG (dag.test()) against a real PostgreSQL. Nothing
else in the package learns of it."""

from __future__ import annotations

import pytest
import yaml

from loyalty_checks import channels
from loyalty_checks.catalog import DEFAULT_CATALOG
from tests.sql.rows import MIN, T
from tests.test_dag_runs import P1
from tests.test_routing import busy_store

SENT: list[dict] = []


class Pigeon(channels.Channel):
    """Carrier pigeon: the rendered body is kept in SENT."""
    name, conn_id, title = "pigeon", "pigeon_loyalty", "Carrier pigeon (`pigeon_loyalty`)"

    def render(self, notice) -> dict:
        return {"event": str(notice.event), "check": notice.check.id, "value": notice.value_text,
                "firing": [e["name"] for e in notice.entities("firing")]}

    def post(self, body: dict, timeout: float | None = None) -> None:
        assert timeout == 10.0  # the catalog's http_timeout of the check's DAG
        SENT.append(body)


@pytest.fixture
def pigeon(tmp_path, monkeypatch):
    channels.register(Pigeon)
    data = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    for check in data["checks"]:
        if check["id"] == "rate_limit_spikes":
            check["routes"] = ["pigeon"]
    path = tmp_path / "site-checks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv("LOYALTY_CHECKS_CATALOG", str(path))
    SENT.clear()
    yield
    channels.REGISTRY.pop("pigeon")


def test_a_registered_channel_is_routable_and_delivers(pigeon, db, run_dag, sink):
    from loyalty_checks.catalog import catalog, route_names

    assert "pigeon" in channels.names() and "pigeon" in route_names()
    assert channels.names()[0] == "pagerduty"  # the pager still goes first
    check = catalog().check("rate_limit_spikes")
    assert check.routes == ("pigeon",)
    busy_store(db, T - 30 * MIN)
    dr, states = run_dag(P1, T)
    assert dr.state == "success", states
    assert states["rate_limit_spikes.notify_pigeon"] == "success"
    assert "rate_limit_spikes.notify_slack" not in states
    assert SENT == [{"event": "trigger", "check": "rate_limit_spikes", "value": "150 per minute",
                     "firing": ["Busy Store"]}]
    assert sink.take("/slack/alerts") == [] and sink.requests == []

    run_dag(P1, T)  # the same T again: decided before, sent before
    assert len(SENT) == 1


def test_an_unregistered_route_is_an_import_error_naming_it(tmp_path):
    from loyalty_checks.catalog import CatalogError, parse_catalog

    data = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    data["checks"][0]["routes"] = ["pigeon"]
    with pytest.raises(CatalogError, match=r"field 'routes': unknown route 'pigeon' \(allowed: pagerduty, slack,"
                                           r" digest\)"):
        parse_catalog(data, tmp_path / "c.yaml")
