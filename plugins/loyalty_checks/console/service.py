"""What the console shows, in the shapes of the JSON API (shared/spec/console.md).

Joins the rows of queries.py with the check catalog (severity, title, threshold,
runbook) and decides what the catalog and the state decide together: P0 first, which
alerts a silence covers, the Airflow run of each alert. Pure over an open connection.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Iterable
from urllib.parse import quote

from loyalty_checks.catalog import SEVERITIES, Catalog, Check
from loyalty_checks.console import queries

STATE_ORDER = {"firing": 0, "pending": 1}


def iso(t: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with its zone, as everywhere in the API."""
    return t.astimezone(dt.timezone.utc).isoformat() if t is not None else None


def number(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def dag_of(cat: Catalog, check: Check) -> str:
    return cat.dags[check.severity].dag_id


def run_path(dag_id: str | None, run_id: str | None) -> str | None:
    """The Airflow UI path of a run, relative to Airflow's base URL (no leading slash)."""
    if not dag_id or not run_id:
        return None
    return f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def visible_checks(cat: Catalog, dag_ids: Iterable[str]) -> list[Check]:
    """Catalog checks whose DAG is in `dag_ids`, in catalog order."""
    dag_ids = set(dag_ids)
    return [c for c in cat.checks if dag_of(cat, c) in dag_ids]


def silence_covers(silence: dict[str, Any], check_id: str, entity_id: str | None) -> bool:
    return silence["check_id"] == check_id and (silence["entity_id"] is None or silence["entity_id"] == entity_id)


def _notification(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if not row:
        return None
    return {"event": row["event"], "t": iso(row["t"]), "channels": list(row["channels"] or []),
            "sent_at": iso(row["sent_at"])}


def alerts(conn, cat: Catalog, checks: list[Check]) -> list[dict[str, Any]]:
    """Every alert now firing or pending of `checks`: P0 first, then catalog order, firing
    before pending, the worst value first."""
    by_id = {c.id: c for c in checks}
    order = {c.id: i for i, c in enumerate(cat.checks)}
    ids = list(by_id)
    rows = queries.active_alerts(conn, ids)
    silences = queries.active_silences(conn, ids)
    last = queries.last_notifications(conn, ids)
    out = []
    for r in rows:
        check = by_id[r["check_id"]]
        scalar = r["entity_key"] == queries.SCALAR
        entity_id = None if scalar else str(r["entity_id"] if r["entity_id"] is not None else r["entity_key"])
        covering = [s["id"] for s in silences if silence_covers(s, check.id, entity_id)]
        value = number(r["value"])
        out.append({
            "check_id": check.id, "severity": check.severity, "title": check.title,
            "entity_id": entity_id, "entity_name": None if scalar else r["entity_name"],
            "entity_kind": check.entity,
            "state": r["state"], "since": iso(r["since"]), "value": value, "threshold": check.threshold,
            "comparison": check.comparison, "unit": check.unit,
            "silenced": bool(covering), "silence_ids": covering,
            "runbook_url": cat.runbook_link(check.id),
            "dag_id": dag_of(cat, check), "run_id": r["last_run_id"],
            "run_path": run_path(dag_of(cat, check), r["last_run_id"]),
            "last_evaluated_at": iso(r["last_evaluated_at"]),
            "last_notification": _notification(last.get(check.id)),
            "_key": (SEVERITIES.index(check.severity), order[check.id], STATE_ORDER.get(r["state"], 9),
                     check.worst_first_key(value) if value is not None else math.inf,
                     str(r["entity_name"] or ""), entity_id or ""),
        })
    out.sort(key=lambda a: a["_key"])
    for a in out:
        del a["_key"]
    return out


def checks_summary(conn, cat: Catalog, checks: list[Check]) -> list[dict[str, Any]]:
    """Every check of `checks` with its latest evaluation (or none yet), catalog order."""
    latest = queries.latest_evaluations(conn, [c.id for c in checks])
    out = []
    for c in checks:
        e = latest.get(c.id) or {}
        out.append({
            "check_id": c.id, "severity": c.severity, "title": c.title,
            "status": e.get("status"), "last_t": iso(e.get("last_t")), "value": number(e.get("value")),
            "threshold": c.threshold, "comparison": c.comparison, "unit": c.unit,
            "error": e.get("error") if e.get("status") == "error" else None,
            "alert_status": e.get("state") or "ok", "alert_since": iso(e.get("state_since")),
            "error_since": iso(e.get("error_since")),
            "entities_breaching": e.get("entities_breaching"), "entities_total": e.get("entities_total"),
            "dag_id": dag_of(cat, c), "run_id": e.get("run_id"),
            "run_path": run_path(e.get("dag_id"), e.get("run_id")),
            "runbook_url": cat.runbook_link(c.id),
        })
    return out


def history(conn, check: Check, since: dt.datetime, until: dt.datetime | None, limit: int) -> dict[str, Any]:
    """Evaluations, notifications and silences of one check in [since, until]."""
    evals, truncated = queries.evaluations(conn, check.id, since, until, limit)
    notes = queries.notifications(conn, check.id, since, until)
    silences = queries.silences_between(conn, check.id, since, until)
    return {
        "check_id": check.id, "since": iso(since), "until": iso(until), "truncated": truncated,
        "threshold": check.threshold, "comparison": check.comparison, "unit": check.unit,
        "evaluations": [{"t": iso(e["t"]), "status": e["status"], "value": number(e["value"]),
                         "alert_status": e["alert_status"], "error": e["error"], "silenced": e["silenced"],
                         "entities_breaching": e["entities_breaching"], "entities_total": e["entities_total"],
                         "run_id": e["run_id"], "run_path": run_path(e["dag_id"], e["run_id"])} for e in evals],
        "notifications": [{"t": iso(n["t"]), "event": n["event"], "channels": list(n["channels"]),
                           "failed": list(n["failed"]), "sent_at": iso(n["sent_at"]),
                           "last_error": n["last_error"], "run_id": n["run_id"]} for n in notes],
        "silences": [silence_json(s) for s in silences],
    }


def silence_json(s: dict[str, Any]) -> dict[str, Any]:
    return {"id": s["id"], "check_id": s["check_id"], "entity_id": s["entity_id"],
            "starts_at": iso(s["starts_at"]), "ends_at": iso(s["ends_at"]),
            "author": s["author"], "reason": s["reason"]}


def silences(conn, checks: list[Check]) -> list[dict[str, Any]]:
    rows = queries.current_and_planned_silences(conn, [c.id for c in checks])
    return [{**silence_json(r), "active": r["active"]} for r in rows]
