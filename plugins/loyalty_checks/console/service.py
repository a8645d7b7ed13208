"""What the console shows, in the shapes of the JSON API (shared/spec/console.md).

Joins the rows of store/console.py with the check catalog (severity, title, threshold,
runbook) and decides what the catalog and the state decide together: P0 first, the
Airflow run of each alert. Which silences are in force and which alerts they cover is
the lifecycle's (silence_active, silence_covers, as for the DAGs), at `t`: the request's
time in Python, never the database's now(). Pure over an open connection.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache
from typing import Any, Iterable
from urllib.parse import quote

from loyalty_checks.catalog import SEVERITIES, Catalog, Check
from loyalty_checks.console.chart import NOTE_LINES, NOTE_PIXELS
from loyalty_checks.lifecycle import Silence, silence_active, silence_covers
from loyalty_checks.store import actions
from loyalty_checks.store import console as store
from loyalty_checks.text import format_duration


def iso(t: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with its zone, as everywhere in the API."""
    if t is None:
        return None
    return (t if t.tzinfo is dt.timezone.utc else t.astimezone(dt.timezone.utc)).isoformat()


def number(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def dag_of(cat: Catalog, check: Check) -> str:
    """The DAG that runs the check (its shard's, when its severity is split)."""
    return cat.dag_id_of(check)


# urllib.parse.quote(text, safe="") of ASCII text, as one str.translate (a year of run ids
# in the history API is 20,000 of them): every ASCII character but letters, digits and _.-~
_PERCENT = {c: f"%{c:02X}" for c in range(128) if not (chr(c).isascii() and chr(c).isalnum()) and chr(c) not in "_.-~"}


def _quote(text: str) -> str:
    return text.translate(_PERCENT) if text.isascii() else quote(text, safe="")


@lru_cache(maxsize=1024)
def _dag_path(dag_id: str) -> str:
    return f"dags/{_quote(dag_id)}/runs/"


def run_path(dag_id: str | None, run_id: str | None) -> str | None:
    """The Airflow UI path of a run, relative to Airflow's base URL (no leading slash)."""
    if not dag_id or not run_id:
        return None
    return _dag_path(dag_id) + _quote(run_id)


def visible_checks(cat: Catalog, dag_ids: Iterable[str]) -> list[Check]:
    """Catalog checks whose DAG is in `dag_ids`, in catalog order."""
    dag_ids = set(dag_ids)
    return [c for c in cat.checks if dag_of(cat, c) in dag_ids]


def _notification(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if not row:
        return None
    return {"event": row["event"], "t": iso(row["t"]), "channels": list(row["channels"] or []),
            "sent_at": iso(row["sent_at"])}


def _alert_checks(conn, cat: Catalog, checks: list[Check]) -> list[dict[str, Any]]:
    """What every alert of a check shares (catalog, latest run, last notification), for the
    checks of `checks` that have an alert now, with their rank: P0 first, then catalog order."""
    order = {c.id: i for i, c in enumerate(cat.checks)}
    states = store.check_states(conn, [c.id for c in checks])
    last = store.last_notifications(conn, list(states))
    out = []
    for c in checks:
        state = states.get(c.id)
        if state is None:
            continue
        dag_id = dag_of(cat, c)
        out.append({"check_id": c.id, "rank": SEVERITIES.index(c.severity) * 10_000 + order[c.id],
                    "sign": -1.0 if c.comparison in (">", ">=") else 1.0,  # worst first
                    "info": {"check_id": c.id, "severity": c.severity, "title": c.title, "entity_kind": c.entity,
                             "threshold": c.threshold, "baseline": baseline_json(c), "comparison": c.comparison, "unit": c.unit,
                             "runbook_url": cat.runbook_link(c.id), "dag_id": dag_id,
                             "run_id": state["last_run_id"], "run_path": run_path(dag_id, state["last_run_id"]),
                             "last_evaluated_at": iso(state["last_evaluated_at"]),
                             "acknowledged_by": state["acknowledged_by"],
                             "acknowledged_at": iso(state["acknowledged_at"]),
                             "last_notification": _notification(last.get(c.id))}})
    return out


def baseline_json(check: Check) -> dict[str, Any] | None:
    """A check's learned threshold as the API shows it (null for a fixed threshold)."""
    b = check.baseline
    if b is None:
        return None
    return {"season": b.season, "history": format_duration(b.history), "min_history": format_duration(b.min_history),
            "window": format_duration(b.window), "min_expected": b.min_expected, "tail": b.tail}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _silence(row: dict[str, Any]) -> Silence:
    return Silence(row["id"], row["check_id"], row["entity_id"], row["ends_at"], row["author"], row["reason"],
                   starts_at=row["starts_at"])


class _Covering:
    """Which silences in force at `t` cover an alert (lifecycle.silence_covers), looked up
    by check and entity first so that 10,000 alerts and many silences stay fast."""

    def __init__(self, silences: list[Silence], t: dt.datetime):
        self.t = t
        self.whole: dict[str, list[Silence]] = {}
        self.entity: dict[tuple[str, str], list[Silence]] = {}
        for s in silences:
            if silence_active(s, t):
                if s.whole_check:
                    self.whole.setdefault(s.check_id, []).append(s)
                else:
                    self.entity.setdefault((s.check_id, s.entity_id), []).append(s)

    def ids(self, check_id: str, key: str) -> list[int]:
        maybe = self.whole.get(check_id, []) + self.entity.get((check_id, key), [])
        return sorted(s.id for s in maybe if silence_covers(s, key, self.t))


def alerts_page(conn, cat: Catalog, checks: list[Check], state: str | None = None, offset: int = 0,
                limit: int = 100, t: dt.datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Alerts now of `checks` (firing or pending; P0 first, then catalog order, firing before
    pending, the worst value first), `limit` from `offset`, and counts over all of them;
    "silenced" as the silences in force at `t` (default now) cover them."""
    t = t or utc_now()
    infos = _alert_checks(conn, cat, checks)
    if not infos:
        return [], {"total": 0, "firing": 0, "pending": 0, "silenced": 0}
    covering = _Covering([_silence(r) for r in store.current_and_planned_silences(conn, [i["check_id"] for i in infos], t)], t)
    whole, entities = list(covering.whole), list(covering.entity)
    rows, counts, maybe = store.ranked_alerts_page(conn, infos, state, offset, limit, whole, entities)
    if counts is None:  # past the last page: the counts still
        _, counts, _ = store.ranked_alerts_page(conn, infos, state, 0, 1)
    alerts = []
    for alert, check_id, key in rows:
        ids = covering.ids(check_id, key)
        alerts.append({**alert, "silenced": bool(ids), "silence_ids": ids})
    counts = counts or {"total": 0, "firing": 0, "pending": 0}
    return alerts, {**counts, "silenced": sum(1 for check_id, key in maybe if covering.ids(check_id, key))}


def checks_summary(conn, cat: Catalog, checks: list[Check]) -> list[dict[str, Any]]:
    """Every check of `checks` with its latest evaluation (or none yet), catalog order."""
    latest = store.latest_evaluations(conn, [c.id for c in checks])
    out = []
    for c in checks:
        e = latest.get(c.id) or {}
        out.append({
            "check_id": c.id, "severity": c.severity, "title": c.title,
            "status": e.get("status"), "last_t": iso(e.get("last_t")), "value": number(e.get("value")),
            "threshold": c.threshold, "baseline": baseline_json(c), "comparison": c.comparison, "unit": c.unit,
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
    evals, truncated = store.evaluations(conn, check.id, since, until, limit)
    if truncated and evals:  # the rest covers what the evaluations answered: from the oldest of them
        since = evals[0][0]
    notes = store.notifications(conn, check.id, since, until)
    silences = store.silences_between(conn, check.id, since, until)
    return {
        "check_id": check.id, "since": iso(since), "until": iso(until), "truncated": truncated,
        "threshold": check.threshold, "baseline": baseline_json(check), "comparison": check.comparison, "unit": check.unit,
        "evaluations": [{"t": iso(t), "status": status, "value": number(value), "alert_status": alert_status,
                         "error": error, "silenced": silenced, "entities_breaching": breaching,
                         "entities_total": total, "run_id": run_id, "run_path": run_path(dag_id, run_id)}
                        for t, status, value, alert_status, error, silenced, dag_id, run_id, total, breaching
                        in evals],
        "notifications": [{"t": iso(n["t"]), "event": n["event"], "channels": list(n["channels"]),
                           "failed": list(n["failed"]), "sent_at": iso(n["sent_at"]),
                           "last_error": n["last_error"], "run_id": n["run_id"]} for n in notes],
        "silences": [silence_json(s) for s in silences],
        "actions": [{"t": iso(a["at"]), "action": a["action"], "actor": a["actor"], "source": a["source"]}
                    for a in actions.actions_of(conn, check.id, since, until)],
    }


def silence_json(s: dict[str, Any]) -> dict[str, Any]:
    return {"id": s["id"], "check_id": s["check_id"], "entity_id": s["entity_id"],
            "starts_at": iso(s["starts_at"]), "ends_at": iso(s["ends_at"]),
            "author": s["author"], "reason": s["reason"]}


def silences(conn, checks: list[Check], t: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Silences of `checks` not ended at `t` (default now), `active` when in force then."""
    t = t or utc_now()
    rows = store.current_and_planned_silences(conn, [c.id for c in checks], t)
    return [{**silence_json(r), "active": silence_active(_silence(r), t)} for r in rows]


def page_history(conn, check: Check, since: dt.datetime, until: dt.datetime, width: int,
                 changes: int) -> dict[str, Any]:
    """What the check page draws, thinned by PostgreSQL to what `width` pixels can show: the
    evaluations per pixel column (lowest and highest value of each, so that a year of a P0
    check stays 2 points a column and its spikes stay visible), the notifications per
    NOTE_PIXELS columns (`notification_marks`: how many, the first few), the latest
    `changes` alert changes and errors, the latest `changes` notifications (for the timeline,
    which shows no more) and the silences."""
    seconds = max((until - since).total_seconds() / width, 1.0)
    evals = []
    for b in store.evaluation_buckets(conn, check.id, since, until, seconds):
        alert = "firing" if b["firing"] else "ok"
        if b["errors"] == b["n"]:
            evals.append({"t": iso(b["error_t"]), "value": None, "status": "error", "alert_status": alert,
                          "error": b["error"]})
            continue
        points = [(b["t0"], b["vmin"]), (b["t1"], b["vmax"])] if b["n"] > 1 else [(b["t0"], b["vmin"])]
        evals += [{"t": iso(t), "value": number(v), "status": alert, "alert_status": alert, "error": None}
                  for t, v in points]
        if b["errors"]:
            evals.append({"t": iso(b["error_t"]), "value": None, "status": "error", "alert_status": alert,
                          "error": b["error"]})
    marks = store.notification_buckets(conn, check.id, since, until, seconds * NOTE_PIXELS, NOTE_LINES)
    return {
        "evaluations": evals,
        "changes": [{"t": iso(c["t"]), "status": c["status"], "value": number(c["value"]),
                     "alert_status": c["alert_status"], "previous": c["previous"], "error": c["error"],
                     "run_path": run_path(c["dag_id"], c["run_id"])}
                    for c in store.alert_changes(conn, check.id, since, until, changes)],
        "notifications": [{"t": iso(n["t"]), "event": n["event"], "channels": list(n["channels"]),
                           "failed": list(n["failed"]), "last_error": n["last_error"]}
                          for n in store.notifications(conn, check.id, since, until, newest=changes)],
        "notification_marks": [{"n": m["n"], "notes": m["notes"]} for m in marks],
        "silences": [silence_json(s) for s in store.silences_between(conn, check.id, since, until)],
        "bands": [{"t": iso(b["t"]), "expected": b["expected"], "low": b["low"], "high": b["high"], "name": b["name"]}
                  for b in store.baseline_bands(conn, check.id, since, until)] if check.baseline else [],
        "actions": [{"t": iso(a["at"]), "action": a["action"], "actor": a["actor"], "source": a["source"]}
                    for a in actions.actions_of(conn, check.id, since, until, limit=changes)],
    }
