"""The check catalog (include/checks.yaml): its schema, declared once, and its loading.

The pydantic models below are the schema: they validate the file, they are the `Check`
and `DagSpec` the code uses, and they generate the JSON Schema published beside the
catalog (`include/checks.schema.json`, `python -m loyalty_checks.catalog --schema`) so
editors validate it too. The catalog is read when a DAG file is parsed, so this module
only reads one small YAML file: no database, network, connection or Variable access.
Every mistake raises CatalogError naming the file, the check and the field, which
Airflow shows as the DAG file's import error.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from loyalty_checks.budget import BudgetError, check_budget
from loyalty_checks.channels import registry as channels
from loyalty_checks.units import DURATION, duration

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
INCLUDE_DIR = PACKAGE_ROOT / "include"
SQL_DIR = INCLUDE_DIR / "sql"
DEFAULT_CATALOG = INCLUDE_DIR / "checks.yaml"
SCHEMA_FILE = INCLUDE_DIR / "checks.schema.json"



class Severity(StrEnum):
    """A check DAG's severity: P0 pages, P1 warns, P2 reports weekly."""
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"


SEVERITIES = tuple(Severity)
DIGEST = "digest"  # the weekly report of the P2 DAG: a route, not a channel
COMPARISONS = (">", ">=", "<", "<=")
NO_DATA_POLICIES = ("fire", "ok", "keep")
SOURCES = ("loyalty_db", "loyalty_monitoring_db")
LIFECYCLE_FIELDS = ("for_runs", "clear_runs", "repeat_after", "escalate_after")
ENTITY_KINDS = (None, "store", "merchant", "provider")
CHECK_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
MAX_SHARDS = 32


class CatalogError(ValueError):
    """The catalog is invalid; the message names file, check and field."""


def parse_duration(text: Any, where: str) -> timedelta:
    """'5m' -> timedelta(minutes=5); anything else raises CatalogError naming `where`."""
    try:
        return duration(text if isinstance(text, str) else None)
    except ValueError as exc:
        raise CatalogError(f"{where}: {exc}".replace("got None", f"got {text!r}")) from None


# ---------------------------------------------------------------- field types
# Each type checks strictly (a threshold of "0.5" or `true` is a mistake, not a value)
# and says what it expected in the words the error messages use.

def _got(value: Any) -> str:
    return "a boolean" if isinstance(value, bool) else f"{type(value).__name__} {value!r}"


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError("is required")
    return value


def _integer(minimum: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(_required(value), int):
            raise ValueError(f"expected an integer, got {_got(value)}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value
    return check


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(_required(value), (int, float)):
        raise ValueError(f"expected an integer or a number, got {_got(value)}")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(_required(value), str):
        raise ValueError(f"expected text, got {_got(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _optional_text(value: Any) -> str:
    return "" if value is None else _text(value) if str(value).strip() else ""


def _one_of(choices: tuple):
    def check(value: Any) -> Any:
        if value not in choices or isinstance(value, bool):
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            raise ValueError(f"must be one of {shown}, got {value!r}")
        return value
    return check


def _sql_file(value: Any, info: ValidationInfo) -> str:
    """A .sql file under the catalog's SQL folder (`sql_dir`, given as validation context)."""
    rel = _text(value)
    sql_dir = Path((info.context or {}).get("sql_dir") or SQL_DIR)
    path = (sql_dir / rel).resolve()
    if sql_dir.resolve() not in path.parents or path.suffix != ".sql":
        raise ValueError(f"must be a .sql file under {sql_dir}, got {rel!r}")
    if not path.is_file():
        raise ValueError(f"SQL file not found: {path}")
    return rel


def route_names() -> tuple[str, ...]:
    """What a route may name: every registered channel (channels/), and the weekly digest."""
    return (*channels.names(), DIGEST)


def _conn_id(value: Any) -> str:
    if not isinstance(value, str) or not CONN_ID.match(value):
        raise ValueError(f"expected an Airflow connection id, got {value!r}")
    return value


def _routes(value: Any) -> tuple[str, ...]:
    if not isinstance(_required(value), (list, tuple)):
        raise ValueError(f"expected a list, got {_got(value)}")
    for route in value:
        if route not in route_names():
            raise ValueError(f"unknown route {route!r} (allowed: {', '.join(route_names())})")
    if DIGEST in value and len(value) > 1:
        raise ValueError(f"'{DIGEST}' reports weekly and cannot be combined with a channel")
    if len(set(value)) != len(value):
        raise ValueError(f"a route is listed twice: {list(value)}")
    return tuple(value)


@dataclass(frozen=True)
class DagsOf:
    """A parameter `{dags_of: P0}`: the DAG ids of that severity's checks (with its shards),
    bound as text `loyalty_p0_checks,loyalty_p0_checks_2` (the P1 watchdog of the P0 DAGs)."""
    severity: str


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_got(value)}")
    params = {}
    for key, item in value.items():
        if not isinstance(key, str) or not CHECK_ID.match(key) or key in ("t", "window"):
            raise ValueError(f"parameter name {key!r} must be lower_snake_case and not 't' or 'window'")
        if isinstance(item, dict) and list(item) == ["dags_of"] and item["dags_of"] in SEVERITIES:
            item = DagsOf(item["dags_of"])  # the DAG ids of that severity, resolved once the DAGs are known
        elif isinstance(item, str) and DURATION.match(item):
            item = duration(item)
        elif not isinstance(item, (str, int, float, timedelta)) or isinstance(item, bool):
            raise ValueError(f"parameter {key!r} must be text, a number, a duration or {{dags_of: P0|P1|P2}},"
                             f" got {item!r}")
        params[key] = item
    return params


def _schema(**schema: Any) -> WithJsonSchema:
    return WithJsonSchema(schema)


def _enum(choices: tuple) -> WithJsonSchema:
    return _schema(enum=list(choices))


_DURATION_SCHEMA = {"type": "string", "pattern": DURATION.pattern, "description": "30s, 5m, 1h, 7d, 2w"}
Duration = Annotated[timedelta, BeforeValidator(duration), WithJsonSchema(_DURATION_SCHEMA)]
OptionalDuration = Annotated[timedelta | None, BeforeValidator(lambda v: None if v is None else duration(v)),
                             WithJsonSchema({"anyOf": [_DURATION_SCHEMA, {"type": "null"}]})]
Text = Annotated[str, BeforeValidator(_text), _schema(type="string", pattern=r"\S")]
Runs = Annotated[int, BeforeValidator(_integer(1)), _schema(type="integer", minimum=1)]
Number = Annotated[float, BeforeValidator(_number), _schema(type="number")]
Routes = Annotated[tuple[str, ...], BeforeValidator(_routes),
                   _schema(type="array", items={"enum": list(route_names())}, minItems=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


# ---------------------------------------------------------------- the schema

class Lifecycle(_Model):
    """Lifecycle fields (docs/lifecycle.md): per DAG under `defaults`, overridable per check."""
    for_runs: Runs | None = Field(None, description="breaching evaluations in a row before an alert fires")
    clear_runs: Runs | None = Field(None, description="clean evaluations in a row before a firing alert resolves")
    repeat_after: OptionalDuration = Field(None, description="remind of a still-firing check after this long")
    escalate_after: OptionalDuration = Field(None, description="page through PagerDuty once it fired this long (moot for a check that pages already)")


class DagSpec(_Model):
    """One of the three check DAGs (`dags.P0`, `dags.P1`, `dags.P2`)."""
    severity: SkipJsonSchema[str] = Field("", exclude=True)
    dag_id: Text
    schedule: Text = Field(description="cron expression, UTC")
    run_timeout: Duration
    retries: Annotated[int, BeforeValidator(_integer(0)), _schema(type="integer", minimum=0)]
    retry_delay: Duration
    statement_timeout: Duration
    owner: Text
    routes: Routes = Field(description="where its checks' notifications go: registered channels (pagerduty,"
                                       " slack), or digest")
    heartbeat: bool = Field(False, description="ping the outside heartbeat (connection loyalty_heartbeat) "
                                               "after every run")
    max_active_tasks: Annotated[int, BeforeValidator(_integer(1)), _schema(type="integer", minimum=1)] = Field(
        16, description="tasks of this DAG that run at once (the DAG's max_active_tasks); the time budget counts"
                        " on no more")
    defaults: Lifecycle = Field(default_factory=Lifecycle, description="lifecycle defaults of its checks")
    shards: Annotated[int, BeforeValidator(_integer(1)), _schema(type="integer", minimum=1, maximum=MAX_SHARDS)] = Field(
        1, description="split this severity's checks over this many DAGs: dag_id, dag_id_2, ... (each check in one,"
                       " by a hash of its id; each DAG with its own time budget; not the weekly digest)")
    shard: SkipJsonSchema[int] = Field(1, exclude=True)  # which one this is (shard_specs)

    @model_validator(mode="before")
    @classmethod
    def _no_internal_fields(cls, data: Any) -> Any:
        for internal in ("severity", "shard"):
            if isinstance(data, dict) and internal in data:
                raise ValueError(f"unknown field {internal!r}")
        return data
    # Time budget (budget.py): database connect timeout, slack after a statement timeout, HTTP timeout.
    connect_timeout: Duration = Field(timedelta(seconds=10), json_schema_extra={"default": "10s"},
                                      description="database connect timeout (per address)")
    grace: Duration = Field(timedelta(seconds=5), json_schema_extra={"default": "5s"},
                            description="after statement_timeout, how long the client still waits")
    http_timeout: Duration = Field(timedelta(seconds=10), json_schema_extra={"default": "10s"},
                                   description="Slack, PagerDuty, heartbeat: per request")


def _whole_hours(value: Any) -> timedelta:
    value = duration(value)
    if value <= timedelta(0) or value % timedelta(hours=1):
        raise ValueError(f"must be a positive number of whole hours, got {value}")
    return value


def _probability(value: Any) -> float:
    value = _number(value)
    if not 0 < value < 0.5:
        raise ValueError(f"must be between 0 and 0.5 (a tail probability), got {value:g}")
    return value


def _positive(value: Any) -> float:
    value = _number(value)
    if not value > 0:
        raise ValueError(f"must be > 0, got {value:g}")
    return value


_HOURS_SCHEMA = {"type": "string", "pattern": DURATION.pattern, "description": "whole hours: 3h, 28d, 4w"}
Hours = Annotated[timedelta, BeforeValidator(_whole_hours), WithJsonSchema(_HOURS_SCHEMA)]
SEASONS = ("hour_of_week", "hour_of_day", "none")


class Baseline(_Model):
    """A threshold learned from each entity's own history (shared/spec/baselines.md,
    loyalty_checks/baseline.py): instead of `threshold`."""
    season: Annotated[str, BeforeValidator(_one_of(SEASONS)), _enum(SEASONS)] = Field(
        "hour_of_week", description="the usual level per hour of the week, of the day, or one level")
    history: Hours = Field(timedelta(days=28), json_schema_extra={"default": "28d"},
                           description="how far back the usual level is learned")
    min_history: Duration = Field(timedelta(days=14), json_schema_extra={"default": "14d"},
                                  description="an entity with less history is 'insufficient history': never fires")
    window: Hours = Field(timedelta(hours=3), json_schema_extra={"default": "3h"},
                          description="the longest trailing window judged at T")
    min_expected: Annotated[float, BeforeValidator(_positive), _schema(type="number", exclusiveMinimum=0)] = Field(
        12.0, description="judge the shortest trailing window of whole hours whose expected count reaches this")
    tail: Annotated[float, BeforeValidator(_probability), _schema(type="number", exclusiveMinimum=0,
                                                                  exclusiveMaximum=0.5)] = Field(
        0.001, description="fires when the observed count is this improbable under the usual level")

    def settings(self, comparison: str):
        """The statistics' settings (loyalty_checks.baseline.Settings)."""
        from loyalty_checks.baseline import Settings

        return Settings(season=self.season, history=self.history, min_history=self.min_history,
                        window=self.window, min_expected=self.min_expected, tail=self.tail,
                        comparison=comparison[0])

    @property
    def span(self) -> timedelta:
        """The hours the SQL returns counts for: the history and the longest window before T."""
        return self.history + self.window


class Check(_Model):
    """One check: its SQL, threshold (or baseline), lifecycle and routes (defaults filled from its DAG)."""
    id: Annotated[str, BeforeValidator(_text), _schema(type="string", pattern=CHECK_ID.pattern)]
    severity: Annotated[str, BeforeValidator(_one_of(SEVERITIES)), _enum(SEVERITIES)]
    title: Text
    description: Text
    sql: Annotated[str, BeforeValidator(_sql_file), _schema(type="string", pattern=r"\.sql$")] = Field(
        description="file under include/sql/, evaluated as of the run's logical time T")
    metric: Text
    unit: Annotated[str, BeforeValidator(_optional_text), _schema(type="string")] = ""
    comparison: Annotated[str, BeforeValidator(_one_of(COMPARISONS)), _enum(COMPARISONS)] = Field(
        description="fires when `value <comparison> threshold`; with `baseline`: < a drop, > a rise")
    threshold: Annotated[float | None, BeforeValidator(lambda v: None if v is None else _number(v)),
                         _schema(type="number")] = Field(None, description="a number; or `baseline` instead")
    baseline: Baseline | None = Field(None, description="instead of `threshold`: the usual level of each entity,"
                                                        " learned from its own history")
    window: OptionalDuration = Field(None, description="bound as %(window)s; windows are (T - window, T]")
    params: Annotated[dict[str, Any], BeforeValidator(_params),
                      _schema(type="object", propertyNames={"pattern": CHECK_ID.pattern, "not": {"enum": ["t", "window"]}},
                              additionalProperties={"anyOf": [
                                  {"type": ["string", "number"]},
                                  {"type": "object", "properties": {"dags_of": {"enum": list(SEVERITIES)}},
                                   "required": ["dags_of"], "additionalProperties": False}]})] = Field(
        default_factory=dict, description="extra bound parameters; duration strings become intervals;"
                                          " {dags_of: P0} the DAG ids of a severity, comma-separated")
    no_data: Annotated[str, BeforeValidator(_one_of(NO_DATA_POLICIES)), _enum(NO_DATA_POLICIES)]
    entity: Annotated[str | None, BeforeValidator(_one_of(ENTITY_KINDS)), _enum(ENTITY_KINDS)] = Field(
        None, description="null: one value per check; else what one row is (each entity is an alert of its own)")
    action: Text
    statement_timeout: OptionalDuration = Field(None, description="overrides the DAG's")
    source: Annotated[str, BeforeValidator(_one_of(SOURCES)), _enum(SOURCES)] = Field(
        "loyalty_db", description="the connection the SQL runs on")
    recovery_threshold: Annotated[float | None, BeforeValidator(lambda v: None if v is None else _number(v)),
                                  _schema(type=["number", "null"])] = Field(
        None, description="while firing, an evaluation is clean only on the ok side of this (hysteresis)")
    for_runs: Runs = 1
    clear_runs: Runs = 1
    repeat_after: OptionalDuration = None
    escalate_after: OptionalDuration = None
    routes: Annotated[tuple[str, ...] | None, BeforeValidator(lambda v: None if v is None else _routes(v)),
                      _schema(type="array", items={"enum": list(route_names())})] = Field(
        None, description="where notifications go; default: the DAG's routes")
    connect_timeout: OptionalDuration = Field(None, description="overrides the DAG's database connect timeout")
    requires_connection: Annotated[str | None, BeforeValidator(lambda v: None if v is None else _conn_id(v)),
                                   _schema(type=["string", "null"], pattern=CONN_ID.pattern)] = Field(
        None, description="an Airflow connection id: the check runs only where it is defined (skipped elsewhere)")
    window_text: SkipJsonSchema[str | None] = Field(None, exclude=True)  # the window as written
    sql_dir: SkipJsonSchema[Path] = Field(SQL_DIR, exclude=True)  # the catalog's SQL folder

    @model_validator(mode="before")
    @classmethod
    def _keep_window_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for internal in ("window_text", "sql_dir"):
                if internal in data:
                    raise ValueError(f"unknown field {internal!r}")
            data = {**data, "window_text": data.get("window") if isinstance(data.get("window"), str) else None}
        return data

    @property
    def sql_path(self) -> Path:
        return self.sql_dir / self.sql

    def breaches(self, value: float, threshold: float | None = None) -> bool:
        """True when `value` is on the firing side of the threshold (or of `threshold`)."""
        return _COMPARE[self.comparison](value, self.threshold if threshold is None else threshold)

    def worst_first_key(self, value: float) -> float:
        """Sort key that puts the most breaching value first."""
        return -value if self.comparison in (">", ">=") else value


class DigestMetric(_Model):
    """An informational metric of the weekly digest: rows of (label, value), no threshold."""
    id: Text
    title: Text
    sql: Annotated[str, BeforeValidator(_sql_file), _schema(type="string", pattern=r"\.sql$")]
    window: OptionalDuration = None
    unit: Annotated[str, BeforeValidator(_optional_text), _schema(type="string")] = ""
    sql_dir: SkipJsonSchema[Path] = Field(SQL_DIR, exclude=True)

    @property
    def sql_path(self) -> Path:
        return self.sql_dir / self.sql


def _slack_ids(prefix: str, example: str):
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(_required(value), (list, tuple)):
            raise ValueError(f"expected a list of Slack ids, got {_got(value)}")
        for item in value:
            if not isinstance(item, str) or not re.fullmatch(rf"{prefix}[A-Z0-9]{{2,30}}", item):
                raise ValueError(f"expected Slack ids like {example}, got {item!r}")
        return tuple(value)
    return check


class SlackActions(_Model):
    """Who may act on an alert from Slack (shared/spec/slack-actions.md); both absent: every
    member of the channel."""
    allowed_users: Annotated[tuple[str, ...] | None, BeforeValidator(lambda v: None if v is None else _slack_ids("[UW]", "U0123ABCD")(v)),
                             _schema(type="array", items={"type": "string", "pattern": "^[UW][A-Z0-9]{2,30}$"})] = Field(
        None, description="Slack user ids (U…, W…) who may acknowledge and silence")
    allowed_usergroups: Annotated[tuple[str, ...] | None, BeforeValidator(lambda v: None if v is None else _slack_ids("S", "S0123ABCD")(v)),
                                  _schema(type="array", items={"type": "string", "pattern": "^S[A-Z0-9]{2,30}$"})] = Field(
        None, description="Slack user group ids (S…) whose members may")


class CatalogFile(_Model):
    """include/checks.yaml."""
    model_config = ConfigDict(extra="forbid", frozen=True, title="Loyalty check catalog")
    version: Annotated[int, BeforeValidator(_integer(1)), _schema(const=1)]
    runbook_url: Annotated[str, BeforeValidator(_text), _schema(type="string", pattern="^https?://")]
    grafana_url: Annotated[str | None, BeforeValidator(lambda v: None if v is None else _text(v)),
                           _schema(type=["string", "null"], pattern="^https?://")] = Field(
        None, description="the Grafana of grafana/ (dashboards loyalty-checks, loyalty-platform), linked from DAG docs")
    entity_cap: Annotated[int, BeforeValidator(_integer(1)), _schema(type="integer", minimum=1)] = Field(
        10, description="entities listed in a notification before '+N more'")
    db_pool_slots: Annotated[int, BeforeValidator(_integer(1)), _schema(type="integer", minimum=1)] = Field(
        4, description="slots of the Airflow pool loyalty_db (`airflow pools set loyalty_db <slots> ...`): check"
                       " queries on loyalty_db that run at once; the time budget counts on no more")
    sql_dir: Annotated[str | None, BeforeValidator(lambda v: None if v is None else _text(v)),
                       _schema(type=["string", "null"])] = Field(
        None, description="the folder of the `sql` files, relative to this catalog file (a site catalog's own);"
                          " default: the package's include/sql")
    dags: dict[Annotated[str, BeforeValidator(_one_of(SEVERITIES)), _enum(SEVERITIES)], DagSpec]
    checks: list[Check]
    digest_metrics: list[DigestMetric] = Field(default_factory=list)
    slack_actions: SlackActions = Field(default_factory=SlackActions,
                                        description="acting on alerts from Slack: who may")


_COMPARE = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}
CHECK_FIELDS = frozenset(Check.model_fields) - {"window_text", "sql_dir"}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of include/checks.yaml, from the models above."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **CatalogFile.model_json_schema()}


# ---------------------------------------------------------------- the loaded catalog

@dataclass(frozen=True)
class Catalog:
    path: Path
    runbook_url: str
    entity_cap: int
    dags: dict[str, DagSpec]
    checks: tuple[Check, ...]
    digest_metrics: tuple[DigestMetric, ...] = field(default_factory=tuple)
    raw_checks: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)
    grafana_url: str | None = None
    sql_dir: Path = SQL_DIR
    db_pool_slots: int = 4
    slack_actions: SlackActions = field(default_factory=SlackActions)

    def for_severity(self, severity: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.severity == severity)

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)

    def shard_specs(self, severity: str) -> tuple[DagSpec, ...]:
        return shard_specs(self.dags[severity])

    def spec_of(self, check: Check) -> DagSpec:
        """The DAG (the shard) that runs `check`."""
        return shard_specs(self.dags[check.severity])[shard_of(check.id, self.dags[check.severity].shards) - 1]

    def dag_id_of(self, check: Check) -> str:
        return self.spec_of(check).dag_id

    def checks_of(self, spec: DagSpec) -> tuple[Check, ...]:
        """The checks of one DAG (one shard of a severity)."""
        return tuple(c for c in self.for_severity(spec.severity) if shard_of(c.id, spec.shards) == spec.shard)

    @property
    def dag_ids(self) -> list[str]:
        """Every check DAG's id, shards included, P0 first."""
        return [s.dag_id for sev in SEVERITIES for s in self.shard_specs(sev)]

    def runbook_link(self, check_id: str) -> str:
        """Built from the check id, never typed: docs/runbooks.md has a `## <id>` section."""
        return f"{self.runbook_url}#{check_id}"


def shard_specs(spec: DagSpec) -> tuple[DagSpec, ...]:
    """A severity's DAGs: `dag_id`, then `dag_id_2` ... `dag_id_<shards>`."""
    return tuple(spec.model_copy(update={"dag_id": spec.dag_id if k == 1 else f"{spec.dag_id}_{k}", "shard": k})
                 for k in range(1, spec.shards + 1))


def shard_of(check_id: str, shards: int) -> int:
    """The shard (1..shards) of a check: a hash of its id, so that adding a check moves no other."""
    return zlib.crc32(check_id.encode()) % shards + 1


def _resolve_params(check: Check, dags: dict[str, DagSpec]) -> Check:
    """{dags_of: P0} parameters as the comma-separated DAG ids of that severity."""
    if not any(isinstance(v, DagsOf) for v in check.params.values()):
        return check
    params = {k: ",".join(s.dag_id for s in shard_specs(dags[v.severity])) if isinstance(v, DagsOf) else v
              for k, v in check.params.items()}
    return check.model_copy(update={"params": params})


def _where(data: Any, loc: tuple, where: str) -> tuple[str, str | None]:
    """The place a pydantic error location points at, in the catalog's words, and the field."""
    if not loc:
        return where, None
    head, rest = loc[0], loc[1:]
    if head == "dags" and rest:
        if len(rest) == 1:  # the DAG's own mapping (an unknown or internal field, not a mapping)
            return f"{where}: dags.{rest[0]}", None
        sev = rest[0]
        if len(rest) >= 3 and rest[1] == "defaults":
            return f"{where}: dags.{sev}.defaults", str(rest[2])
        return f"{where}: dags.{sev}", str(rest[1])
    if head in ("checks", "digest_metrics") and rest and isinstance(rest[0], int):
        items = data.get(head) if isinstance(data, dict) else None
        item = items[rest[0]] if isinstance(items, list) and rest[0] < len(items) else None
        ident = item.get("id") if isinstance(item, dict) else None
        kind = "check" if head == "checks" else "digest metric"
        label = f"{kind} {ident!r}" if isinstance(ident, str) and ident else f"{head}[{rest[0]}]"
        name = ".".join(str(p) for p in rest[1:3]) if rest[1:2] == ("baseline",) else str(rest[1]) if len(rest) > 1 else None
        return f"{where}: {label}", name
    return where, ".".join(str(part) for part in loc)


def _error(exc: ValidationError, data: Any, where: str) -> CatalogError:
    """The first error of a validation, naming the file, the check and the field."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        place, _ = _where(data, loc[:-1], where)
        return CatalogError(f"{place}: unknown field {loc[-1]!r}")
    place, name = _where(data, loc, where)
    message = str(err.get("ctx", {}).get("error") or err["msg"]) if err["type"] == "value_error" else err["msg"]
    if err["type"] == "missing":
        message = "is required"
    elif err["type"] in ("dict_type", "model_type", "list_type", "model_attributes_type"):
        message = f"expected {'a list' if err['type'] == 'list_type' else 'a mapping'}, got {_got(err['input'])}"
    if message.startswith("unknown field"):
        return CatalogError(f"{place}: {message}")
    return CatalogError(f"{place}, field {name!r}: {message}" if name else f"{place}: {message}")


def _resolve(check: Check, dag: DagSpec, where: str) -> Check:
    """Fill the DAG's defaults into a check and check what spans several fields."""
    def fail(name: str, msg: str):
        raise CatalogError(f"{where}: check {check.id!r}, field {name!r}: {msg}")

    set_fields = check.model_fields_set
    lifecycle = {n: getattr(dag.defaults, n) for n in LIFECYCLE_FIELDS
                 if n not in set_fields and n in dag.defaults.model_fields_set}
    routes = check.routes or dag.routes
    if routes != dag.routes and DIGEST in (*routes, *dag.routes):
        fail("routes", f"the {check.severity} DAG routes to {list(dag.routes)}; a check of it cannot route to {list(routes)}")
    escalate = lifecycle.get("escalate_after", check.escalate_after)
    if escalate is not None and DIGEST in routes:
        fail("escalate_after", f"a check of the weekly digest does not escalate (routes: {list(routes)})")
    if escalate is not None and channels.pager() in routes:
        lifecycle["escalate_after"] = None  # it pages already: escalating to the pager is moot
    if check.baseline is None and check.threshold is None:
        fail("threshold", "is required (or `baseline`: a threshold learned from history)")
    if check.baseline is not None:
        for name, bad in (("threshold", check.threshold is not None), ("recovery_threshold", check.recovery_threshold is not None),
                          ("window", check.window is not None)):
            if bad:
                fail(name, "a check with `baseline` has none (its window is baseline.window)")
        if check.entity is None:
            fail("baseline", "needs `entity`: the usual level is learned per entity")
        if check.comparison not in ("<", ">"):
            fail("comparison", f"a baseline fires on a drop (<) or a rise (>), got {check.comparison!r}")
    recovery = check.recovery_threshold
    if recovery is not None and check.breaches(recovery) and recovery != check.threshold:
        fail("recovery_threshold", f"must be on the ok side of the threshold ({check.comparison} {check.threshold:g}),"
                                   f" got {recovery:g}")
    if check.no_data == "fire" and check.entity is not None:
        fail("no_data", "'fire' needs a check without entities (with no rows there is no entity to fire for)")
    if not CHECK_ID.match(check.id):
        fail("id", f"must be lower_snake_case (a-z, 0-9, _), got {check.id!r}")
    return check.model_copy(update={**lifecycle, "routes": routes,
                                    "statement_timeout": check.statement_timeout or dag.statement_timeout})


def _catalog_sql_dir(data: Any, path: Path) -> Path:
    """The catalog's `sql_dir` (relative to the catalog file), or the package's include/sql."""
    value = data.get("sql_dir") if isinstance(data, dict) else None
    if value is None:
        return SQL_DIR
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{path}, field 'sql_dir': expected a folder path, got {value!r}")
    folder = (path.parent / value.strip()).resolve()
    if not folder.is_dir():
        raise CatalogError(f"{path}, field 'sql_dir': not a folder: {folder}")
    return folder


def parse_catalog(data: Any, path: Path) -> Catalog:
    where = str(path)
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: expected a mapping, got {type(data).__name__}")
    if data.get("version", 1) != 1 and not isinstance(data.get("version"), bool):
        raise CatalogError(f"{where}, field 'version': only version 1 is supported")
    sql_dir = _catalog_sql_dir(data, path)
    try:
        parsed = CatalogFile.model_validate(data, context={"sql_dir": sql_dir})
    except ValidationError as exc:
        raise _error(exc, data, where) from None
    missing = [s for s in SEVERITIES if s not in parsed.dags]
    if missing:
        raise CatalogError(f"{where}, field 'dags': missing the {missing[0]} DAG")
    dags = {sev: parsed.dags[sev].model_copy(update={"severity": sev}) for sev in SEVERITIES}
    for spec in dags.values():
        if spec.shards > 1 and DIGEST in spec.routes:
            raise CatalogError(f"{where}: dags.{spec.severity}, field 'shards': the weekly digest is one DAG"
                               f" (routes {list(spec.routes)}), got {spec.shards}")
    dag_ids = [s.dag_id for d in dags.values() for s in shard_specs(d)]
    if len(set(dag_ids)) != len(dag_ids):
        raise CatalogError(f"{where}, field 'dags': dag_id values (with their shards) must differ, got {dag_ids}")

    checks, raw_checks = [], {}
    for raw, check in zip(data["checks"], parsed.checks, strict=True):
        if check.id in raw_checks:
            raise CatalogError(f"{where}: check {check.id!r}, field 'id': duplicate check id")
        checks.append(_resolve_params(_resolve(check.model_copy(update={"sql_dir": sql_dir}), dags[check.severity],
                                               where), dags))
        raw_checks[check.id] = raw
    metric_ids = [m.id for m in parsed.digest_metrics]
    dup = next((m for m in metric_ids if metric_ids.count(m) > 1), None)
    if dup:
        raise CatalogError(f"{where}: digest metric {dup!r}, field 'id': duplicate id")
    for spec in dags.values():
        # Shards run at once and share the loyalty_db pool: each counts on its part of the slots.
        slots = max(1, parsed.db_pool_slots // spec.shards)
        for shard in shard_specs(spec):
            try:
                check_budget(shard, [c for c in checks if c.severity == spec.severity
                                     and shard_of(c.id, spec.shards) == shard.shard], where, slots)
            except BudgetError as exc:
                raise CatalogError(str(exc)) from None
    return Catalog(path=path, runbook_url=parsed.runbook_url.rstrip("#"), entity_cap=parsed.entity_cap, dags=dags,
                   checks=tuple(checks), raw_checks=raw_checks, sql_dir=sql_dir, db_pool_slots=parsed.db_pool_slots,
                   digest_metrics=tuple(m.model_copy(update={"sql_dir": sql_dir}) for m in parsed.digest_metrics),
                   grafana_url=parsed.grafana_url.rstrip("/") if parsed.grafana_url else None,
                   slack_actions=parsed.slack_actions)


def with_overrides(cat: Catalog, check_id: str, overrides: dict[str, Any], where: str = "overrides") -> Check:
    """The check with some catalog fields replaced, validated exactly like the catalog.

    Keys are field names of a catalog check (`threshold`, `for_runs`, `repeat_after`,
    `window`, ...), `params.NAME` or `baseline.NAME`; values as YAML gives them (numbers, durations such
    as "2h", null). Used by check tests and backtests; errors name `where` and the field.
    """
    try:
        raw = dict(cat.raw_checks[check_id])
    except KeyError:
        raise CatalogError(f"{where}: unknown check {check_id!r} (known: {', '.join(c.id for c in cat.checks)})") from None
    raw["params"] = dict(raw.get("params") or {})
    for key, value in overrides.items():
        name = key.split(".", 1)[1] if key.startswith("params.") else None
        if key.startswith("baseline."):
            field_name = key.split(".", 1)[1]
            if not isinstance(raw.get("baseline"), dict):
                raise CatalogError(f"{where}: check {check_id!r} has no baseline (field {key!r})")
            if field_name not in Baseline.model_fields:
                raise CatalogError(f"{where}: field {key!r} is not a baseline field (allowed: "
                                   f"{', '.join('baseline.' + f for f in Baseline.model_fields)})")
            raw["baseline"] = {**raw["baseline"], field_name: value}
        elif name is not None:
            if name not in raw["params"]:
                known = ", ".join(raw["params"]) or "none"
                raise CatalogError(f"{where}: check {check_id!r} has no parameter {name!r} (its params: {known})")
            raw["params"][name] = value
        elif key in ("id", "severity") or key not in CHECK_FIELDS:
            allowed = ", ".join(sorted(CHECK_FIELDS - {"id", "severity"}) + ["params.NAME"])
            raise CatalogError(f"{where}: field {key!r} cannot be overridden (allowed: {allowed})")
        else:
            raw[key] = value
    try:
        check = Check.model_validate(raw, context={"sql_dir": cat.sql_dir})
    except ValidationError as exc:
        raise _error(exc, {"checks": [raw]}, where) from None
    return _resolve_params(_resolve(check.model_copy(update={"sql_dir": cat.sql_dir}), cat.dags[check.severity],
                                    where), cat.dags)


def load_yaml(text: str) -> Any:
    """Safe YAML, with libyaml's C loader when PyYAML has it (several times faster)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """Read and validate a catalog file (not cached; see `catalog()`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the check catalog: {exc}") from exc
    try:
        data = load_yaml(text)
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


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m loyalty_checks.catalog --schema   (prints the JSON Schema of checks.yaml)")
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
