"""Load and validate the check catalog (include/checks.yaml).

The catalog is read when a DAG file is parsed, so this module only reads one small
YAML file and checks it: no database, network, connection or Variable access. Every
mistake raises CatalogError naming the file, the check and the field, which Airflow
shows as the DAG file's import error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
INCLUDE_DIR = PACKAGE_ROOT / "include"
SQL_DIR = INCLUDE_DIR / "sql"
DEFAULT_CATALOG = INCLUDE_DIR / "checks.yaml"

SEVERITIES = ("P0", "P1", "P2")
COMPARISONS = (">", ">=", "<", "<=")
NO_DATA_POLICIES = ("fire", "ok", "keep")
SOURCES = ("loyalty_db", "loyalty_monitoring_db")
LIFECYCLE_FIELDS = ("for_runs", "clear_runs", "repeat_after", "escalate_after")
ENTITY_KINDS = (None, "store", "merchant", "provider")
ROUTES = ("pagerduty", "slack", "digest")
CHECK_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CatalogError(ValueError):
    """The catalog is invalid; the message names file, check and field."""


@dataclass(frozen=True)
class DagSpec:
    severity: str
    dag_id: str
    schedule: str
    run_timeout: timedelta
    retries: int
    retry_delay: timedelta
    statement_timeout: timedelta
    owner: str
    routes: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)  # lifecycle defaults of its checks
    # Time budget (budget.py): database connect timeout, slack after a statement timeout, HTTP timeout.
    connect_timeout: timedelta = timedelta(seconds=10)
    grace: timedelta = timedelta(seconds=5)
    http_timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class Check:
    id: str
    severity: str
    title: str
    description: str
    sql: str
    metric: str
    unit: str
    comparison: str
    threshold: float
    window: timedelta | None
    window_text: str | None
    params: dict[str, Any]
    no_data: str
    entity: str | None
    action: str
    statement_timeout: timedelta
    source: str = "loyalty_db"                  # the connection the SQL runs on
    for_runs: int = 1                           # breaching evaluations in a row before firing
    clear_runs: int = 1                         # clean evaluations in a row before resolving
    recovery_threshold: float | None = None     # while firing, clean only beyond this (hysteresis)
    repeat_after: timedelta | None = None       # remind of a still-firing alert after this long
    escalate_after: timedelta | None = None     # page through PagerDuty after firing this long
    routes: tuple[str, ...] = ()                # where notifications go: the DAG's routes, or the check's own
    connect_timeout: timedelta | None = None    # overrides the DAG's database connect timeout

    @property
    def sql_path(self) -> Path:
        return SQL_DIR / self.sql

    def breaches(self, value: float, threshold: float | None = None) -> bool:
        """True when `value` is on the firing side of the threshold (or of `threshold`)."""
        return _COMPARE[self.comparison](value, self.threshold if threshold is None else threshold)

    def worst_first_key(self, value: float) -> float:
        """Sort key that puts the most breaching value first."""
        return -value if self.comparison in (">", ">=") else value


@dataclass(frozen=True)
class DigestMetric:
    id: str
    title: str
    sql: str
    window: timedelta | None
    unit: str = ""

    @property
    def sql_path(self) -> Path:
        return SQL_DIR / self.sql


@dataclass(frozen=True)
class Catalog:
    path: Path
    runbook_url: str
    entity_cap: int
    dags: dict[str, DagSpec]
    checks: tuple[Check, ...]
    digest_metrics: tuple[DigestMetric, ...] = field(default_factory=tuple)
    raw_checks: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def for_severity(self, severity: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.severity == severity)

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)

    def runbook_link(self, check_id: str) -> str:
        """Built from the check id, never typed: docs/runbooks.md has a `## <id>` section."""
        return f"{self.runbook_url}#{check_id}"


_COMPARE = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}

_CHECK_FIELDS = {
    "id", "severity", "title", "description", "sql", "metric", "unit", "comparison",
    "threshold", "window", "params", "no_data", "entity", "action", "statement_timeout",
    "source", "recovery_threshold", "routes", "connect_timeout", *LIFECYCLE_FIELDS,
}
_CHECK_REQUIRED = _CHECK_FIELDS - {"params", "statement_timeout", "window", "entity", "unit", "source",
                                   "recovery_threshold", "routes", "connect_timeout",
                                   *LIFECYCLE_FIELDS}
_DAG_FIELDS = {
    "dag_id", "schedule", "run_timeout", "retries", "retry_delay", "statement_timeout",
    "owner", "routes", "defaults", "connect_timeout", "grace", "http_timeout",
}
_TOP_FIELDS = {"version", "runbook_url", "entity_cap", "dags", "checks", "digest_metrics"}
_METRIC_FIELDS = {"id", "title", "sql", "window", "unit"}


def parse_duration(text: Any, where: str) -> timedelta:
    """'5m' -> timedelta(minutes=5); anything else raises CatalogError naming `where`."""
    m = DURATION.match(text) if isinstance(text, str) else None
    if not m:
        raise CatalogError(f"{where}: expected a duration like 30s, 5m, 1h, 7d, got {text!r}")
    return timedelta(**{DURATION_UNITS[m.group(2)]: int(m.group(1))})


class _Reader:
    """Field access on one YAML mapping that reports errors with their location."""

    def __init__(self, data: Any, where: str, allowed: set[str]):
        if not isinstance(data, dict):
            raise CatalogError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise CatalogError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        self.data, self.where = data, where

    def fail(self, name: str, msg: str):
        raise CatalogError(f"{self.where}, field {name!r}: {msg}")

    def get(self, name: str, types: type | tuple, required: bool = True, default: Any = None) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                self.fail(name, "is required")
            return default
        value = self.data[name]
        # bool is an int in Python; a threshold or a retry count of `true` is a mistake.
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(name, f"expected {_type_names(types)}, got a boolean")
        if not isinstance(value, types):
            self.fail(name, f"expected {_type_names(types)}, got {type(value).__name__} {value!r}")
        return value

    def text(self, name: str, required: bool = True) -> str:
        value = self.get(name, str, required, default="")
        if required and not value.strip():
            self.fail(name, "must not be empty")
        return value.strip()

    def choice(self, name: str, choices: tuple) -> Any:
        value = self.data.get(name)
        if value not in choices:
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            self.fail(name, f"must be one of {shown}, got {value!r}")
        return value

    def duration(self, name: str, required: bool = True) -> timedelta | None:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is required")
            return None
        return parse_duration(value, f"{self.where}, field {name!r}")


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({"str": "text", "int": "an integer", "float": "a number", "dict": "a mapping",
                        "list": "a list"}.get(t.__name__, t.__name__) for t in types)


def _sql_file(r: _Reader, name: str) -> str:
    rel = r.text(name)
    path = (SQL_DIR / rel).resolve()
    if SQL_DIR.resolve() not in path.parents or path.suffix != ".sql":
        r.fail(name, f"must be a .sql file under {SQL_DIR}, got {rel!r}")
    if not path.is_file():
        r.fail(name, f"SQL file not found: {path}")
    return rel


def _dag_spec(severity: str, data: Any, where: str) -> DagSpec:
    r = _Reader(data, f"{where}: dags.{severity}", _DAG_FIELDS)
    routes = _routes(r)
    retries = r.get("retries", int)
    if retries < 0:
        r.fail("retries", "must be >= 0")
    defaults = _lifecycle(_Reader(r.get("defaults", dict, required=False, default={}),
                                  f"{where}: dags.{severity}.defaults", set(LIFECYCLE_FIELDS)), {})
    spec = DagSpec(
        severity=severity,
        defaults=defaults,
        dag_id=r.text("dag_id"),
        schedule=r.text("schedule"),
        run_timeout=r.duration("run_timeout"),
        retries=retries,
        retry_delay=r.duration("retry_delay"),
        statement_timeout=r.duration("statement_timeout"),
        owner=r.text("owner"),
        routes=tuple(routes),
        **{name: r.duration(name) for name in ("connect_timeout", "grace", "http_timeout") if name in r.data},
    )
    return spec


def _routes(r: _Reader, required: bool = True) -> tuple[str, ...] | None:
    routes = r.get("routes", list, required=required)
    if routes is None:
        return None
    for route in routes:
        if route not in ROUTES:
            r.fail("routes", f"unknown route {route!r} (allowed: {', '.join(ROUTES)})")
    if "digest" in routes and len(routes) > 1:
        r.fail("routes", "'digest' reports weekly and cannot be combined with pagerduty or slack")
    return tuple(routes)


def _lifecycle(r: _Reader, defaults: dict[str, Any]) -> dict[str, Any]:
    """for_runs, clear_runs (>= 1), repeat_after, escalate_after (durations or null)."""
    out = dict(defaults)
    for name in ("for_runs", "clear_runs"):
        if name in r.data:
            value = r.get(name, int)
            if value < 1:
                r.fail(name, "must be >= 1")
            out[name] = value
    for name in ("repeat_after", "escalate_after"):
        if name in r.data:
            out[name] = r.duration(name, required=False)
    return out


def _params(r: _Reader) -> dict[str, Any]:
    raw = r.get("params", dict, required=False, default={})
    params = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not CHECK_ID.match(key) or key in ("t", "window"):
            r.fail("params", f"parameter name {key!r} must be lower_snake_case and not 't' or 'window'")
        if isinstance(value, str) and DURATION.match(value):
            value = parse_duration(value, f"{r.where}, field 'params.{key}'")
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            r.fail("params", f"parameter {key!r} must be text, a number or a duration, got {value!r}")
        params[key] = value
    return params


def _check(data: Any, index: int, where: str, dags: dict[str, DagSpec]) -> Check:
    cid = data.get("id") if isinstance(data, dict) else None
    label = f"check {cid!r}" if isinstance(cid, str) else f"checks[{index}]"
    r = _Reader(data, f"{where}: {label}", _CHECK_FIELDS)
    missing = sorted(_CHECK_REQUIRED - set(r.data))
    if missing:
        r.fail(missing[0], "is required")
    cid = r.text("id")
    if not CHECK_ID.match(cid):
        r.fail("id", f"must be lower_snake_case (a-z, 0-9, _), got {cid!r}")
    severity = r.choice("severity", SEVERITIES)
    threshold = r.get("threshold", (int, float))
    window = r.duration("window", required=False)
    dag = dags[severity]
    recovery = r.get("recovery_threshold", (int, float), required=False)
    comparison = r.choice("comparison", COMPARISONS)
    if recovery is not None and _COMPARE[comparison](recovery, threshold) and recovery != threshold:
        r.fail("recovery_threshold", f"must be on the ok side of the threshold ({comparison} {threshold}),"
                                     f" got {recovery}")
    lifecycle = _lifecycle(r, dag.defaults)
    routes = _routes(r, required=False) or dag.routes
    if routes != dag.routes and "digest" in (*routes, *dag.routes):
        r.fail("routes", f"the {severity} DAG routes to {list(dag.routes)}; a check of it cannot route to {list(routes)}")
    if lifecycle.get("escalate_after") is not None and ("pagerduty" in routes or "slack" not in routes):
        r.fail("escalate_after", f"only checks that warn on slack without paging escalate (routes: {list(routes)})")
    entity, no_data = r.choice("entity", ENTITY_KINDS), r.choice("no_data", NO_DATA_POLICIES)
    if no_data == "fire" and entity is not None:
        r.fail("no_data", "'fire' needs a check without entities (with no rows there is no entity to fire for)")
    source = r.data.get("source", "loyalty_db")
    if source not in SOURCES:
        r.fail("source", f"must be one of {', '.join(SOURCES)}, got {source!r}")
    return Check(
        id=cid,
        severity=severity,
        title=r.text("title"),
        description=r.text("description"),
        sql=_sql_file(r, "sql"),
        metric=r.text("metric"),
        unit=r.text("unit", required=False),
        comparison=comparison,
        threshold=float(threshold),
        window=window,
        window_text=r.data.get("window"),
        params=_params(r),
        no_data=no_data,
        entity=entity,
        action=r.text("action"),
        statement_timeout=r.duration("statement_timeout", required=False) or dag.statement_timeout,
        source=source,
        recovery_threshold=float(recovery) if recovery is not None else None,
        routes=routes,
        connect_timeout=r.duration("connect_timeout", required=False),
        **lifecycle,
    )


def _digest_metric(data: Any, index: int, where: str) -> DigestMetric:
    mid = data.get("id") if isinstance(data, dict) else None
    r = _Reader(data, f"{where}: digest metric {mid!r}" if mid else f"{where}: digest_metrics[{index}]", _METRIC_FIELDS)
    return DigestMetric(id=r.text("id"), title=r.text("title"), sql=_sql_file(r, "sql"),
                        window=r.duration("window", required=False), unit=r.text("unit", required=False))


def parse_catalog(data: Any, path: Path) -> Catalog:
    where = str(path)
    top = _Reader(data, where, _TOP_FIELDS)
    if top.get("version", int) != 1:
        top.fail("version", "only version 1 is supported")
    dags_raw = top.get("dags", dict)
    for sev in dags_raw:
        if sev not in SEVERITIES:
            top.fail("dags", f"unknown severity {sev!r} (allowed: {', '.join(SEVERITIES)})")
    missing = [s for s in SEVERITIES if s not in dags_raw]
    if missing:
        top.fail("dags", f"missing the {missing[0]} DAG")
    dags = {sev: _dag_spec(sev, dags_raw[sev], where) for sev in SEVERITIES}
    dag_ids = [d.dag_id for d in dags.values()]
    if len(set(dag_ids)) != len(dag_ids):
        top.fail("dags", f"dag_id values must differ, got {dag_ids}")

    checks_raw = top.get("checks", list)
    checks, seen, raw_checks = [], set(), {}
    for i, raw in enumerate(checks_raw):
        check = _check(raw, i, where, dags)
        if check.id in seen:
            raise CatalogError(f"{where}: check {check.id!r}, field 'id': duplicate check id")
        seen.add(check.id)
        checks.append(check)
        raw_checks[check.id] = raw

    metrics_raw = top.get("digest_metrics", list, required=False, default=[])
    metrics = tuple(_digest_metric(m, i, where) for i, m in enumerate(metrics_raw))
    metric_ids = [m.id for m in metrics]
    dup = next((m for m in metric_ids if metric_ids.count(m) > 1), None)
    if dup:
        raise CatalogError(f"{where}: digest metric {dup!r}, field 'id': duplicate id")

    cap = top.get("entity_cap", int, required=False, default=10)
    if cap < 1:
        top.fail("entity_cap", "must be >= 1")
    runbook_url = top.text("runbook_url")
    if not runbook_url.startswith(("https://", "http://")):
        top.fail("runbook_url", f"must be an http(s) URL, got {runbook_url!r}")
    from loyalty_checks.budget import check_budget

    for spec in dags.values():
        check_budget(spec, [c for c in checks if c.severity == spec.severity], where)
    return Catalog(path=path, runbook_url=runbook_url.rstrip("#"), entity_cap=cap, dags=dags,
                   checks=tuple(checks), digest_metrics=metrics, raw_checks=raw_checks)


def with_overrides(cat: Catalog, check_id: str, overrides: dict[str, Any], where: str = "overrides") -> Check:
    """The check with some catalog fields replaced, validated exactly like the catalog.

    Keys are field names of a catalog check (`threshold`, `for_runs`, `repeat_after`,
    `window`, ...) or `params.NAME`; values as YAML gives them (numbers, durations such
    as "2h", null). Used by check tests and backtests; errors name `where` and the field.
    """
    try:
        raw = dict(cat.raw_checks[check_id])
    except KeyError:
        raise CatalogError(f"{where}: unknown check {check_id!r} (known: {', '.join(c.id for c in cat.checks)})") from None
    raw["params"] = dict(raw.get("params") or {})
    for key, value in overrides.items():
        name = key.split(".", 1)[1] if key.startswith("params.") else None
        if name is not None:
            if name not in raw["params"]:
                known = ", ".join(raw["params"]) or "none"
                raise CatalogError(f"{where}: check {check_id!r} has no parameter {name!r} (its params: {known})")
            raw["params"][name] = value
        elif key in ("id", "severity") or key not in _CHECK_FIELDS:
            allowed = ", ".join(sorted(_CHECK_FIELDS - {"id", "severity"}) + ["params.NAME"])
            raise CatalogError(f"{where}: field {key!r} cannot be overridden (allowed: {allowed})")
        else:
            raw[key] = value
    return _check(raw, 0, f"{where}", cat.dags)


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """Read and validate a catalog file (not cached; see `catalog()`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the check catalog: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc
    return parse_catalog(data, path)


def catalog_path() -> Path:
    """include/checks.yaml, or the file named by LOYALTY_CHECKS_CATALOG (a site's own catalog)."""
    return Path(os.environ.get("LOYALTY_CHECKS_CATALOG") or DEFAULT_CATALOG)


def catalog() -> Catalog:
    """The validated catalog, read again only when the file changes."""
    path = catalog_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _cached(path, stamp)


@lru_cache(maxsize=4)
def _cached(path: Path, stamp: int | None) -> Catalog:
    return load_catalog(path)
