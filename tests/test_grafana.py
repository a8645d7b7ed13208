"""The Grafana dashboards (grafana/): provisioning, dashboard structure, and every panel's
SQL run for real, so that a dashboard cannot ship broken.

1. The provisioning files: two PostgreSQL data sources with fixed uids and credentials
   from environment variables only; a file provider for grafana/dashboards/.
2. Every dashboard JSON: uid, title, panels with ids, positions, descriptions, and
   targets with raw SQL on a provisioned data source (annotations too).
3. Every query is expanded the way Grafana's PostgreSQL data source expands it (see
   `expand` below, checked against the cases of Grafana's own macros_test.go) and run on
   a real PostgreSQL: the loyalty database from include/sql/schema/loyalty.sql filled by
   demo.generate as of T, and a monitoring database from monitoring.sql holding a day of
   evaluations, alert state, silences and notifications. Each query runs as a role with
   the grants docs/deploy.md gives Grafana (SELECT, no personal-data columns), in a READ
   ONLY transaction, and must return rows with the declared columns; time series the shape Grafana needs (a "time" column first,
   ascending, values numeric, one point per series and time). The same queries must
   also succeed on a range without data, and give the same result whatever the session
   time zone (Grafana sets none).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql as pgsql

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "loyalty.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "loyalty.yaml"

PG_TYPE = "grafana-postgresql-datasource"
BUILTIN_GRAFANA = {"type": "grafana", "uid": "-- Grafana --"}
LOYALTY_DS, MONITORING_DS = "loyalty-db", "loyalty-monitoring"

T = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)   # a Monday, as in the other tests


# ====================================================================================
# Grafana's PostgreSQL macros, expanded as the data source does
# ====================================================================================
# Grafana (pkg/tsdb/grafana-postgresql-datasource: macros.go and sqleng.Interpolate)
# expands a panel's rawSql on the server, in this order:
#   1. SQL comments are removed (-- and /* */, quote-aware; Grafana 12.x and later);
#   2. $__interval_ms, $__interval, $__unixEpochFrom(), $__unixEpochTo() are replaced
#      by plain text substitution;
#   3. every `$name(args)` (regex \$([_a-zA-Z0-9]+)\(([^\)]*)\), args split on ",",
#      blanks trimmed) is replaced; an unknown name is an error:
#        $__time(c)              c AS "time"
#        $__timeEpoch(c)         extract(epoch from c) as "time"
#        $__timeFilter(c)        c BETWEEN '<from>' AND '<to>'   (RFC 3339, UTC, "Z")
#        $__timeFrom()           '<from>'          $__timeTo()   '<to>'
#        $__timeGroup(c, '1h'[, fill])  floor(extract(epoch from c)/3600)*3600
#                                (+ AS "time" when followed by a comma: pre-5.3 style)
#        $__timeGroupAlias(c, '1h'[, fill])  the same + AS "time"
#        $__unixEpochFilter(c)   c >= <from s> AND c <= <to s>   (and the Nano forms)
#        $__unixEpochGroup(c, '1h'[, fill])  floor((c)/3600)*3600  (+Alias: AS "time")
#   The fill argument (NULL, previous or a number) only tells Grafana how to fill
#   missing intervals in the result frame afterwards; it is validated here, not applied.
# Template variables ($var) are the browser's business and the dashboards use none.

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MacroError(ValueError):
    pass


def parse_interval(text: str) -> dt.timedelta:
    """Grafana's gtime.ParseInterval for the units a fixed interval can have."""
    m = _DURATION.match(text.strip().strip("'"))
    if not m:
        raise MacroError(f"error parsing interval {text}")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def format_interval(interval: dt.timedelta) -> str:
    """Grafana's gtime.FormatInterval (whole units, truncated), the text of $__interval."""
    ms = int(interval.total_seconds() * 1000)
    for unit, size in (("y", 365 * 86400_000), ("d", 86400_000), ("h", 3600_000), ("m", 60_000),
                       ("s", 1000), ("ms", 1)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def _go_number(seconds: float) -> str:
    """Go's %v of a float64 (3600 -> "3600", 0.5 -> "0.5")."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(seconds)


def _rfc3339(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: trailing zeros of the fraction dropped, "Z"."""
    t = t.astimezone(dt.timezone.utc)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def strip_sql_comments(sql: str) -> str:
    """Remove -- and /* */ comments outside '...', "..." and $tag$...$tag$ (Grafana's
    stripSQLComments, without its exception for SQLCommenter tags)."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "$":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m:                                   # a dollar-quoted string
                end = sql.find(m.group(0), i + len(m.group(0)))
                end = n if end < 0 else end + len(m.group(0))
                out.append(sql[i:end])
                i = end
            else:                                   # a macro or $1
                out.append(c)
                i += 1
        elif c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1])
            i = j + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end                # the newline stays
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(sql: str, start: dt.datetime, end: dt.datetime, interval: dt.timedelta,
           strip_comments: bool = True) -> str:
    """`sql` as Grafana's PostgreSQL data source sends it to the database for the time
    range [start, end] and the panel interval `interval` (TimescaleDB off)."""
    if strip_comments:
        sql = strip_sql_comments(sql)
    sql = sql.replace("$__interval_ms", str(int(interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(end.timestamp())))

    def nanos(t: dt.datetime) -> int:
        return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000

    def group(args: list[str], name: str) -> str:
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        seconds = _go_number(parse_interval(args[1]).total_seconds())
        if len(args) == 3 and args[2] not in ("NULL", "previous"):
            try:
                float(args[2])
            except ValueError:
                raise MacroError(f"error parsing fill value {args[2]}") from None
        if name.startswith("$__unixEpoch"):
            return f"floor(({args[0]})/{seconds})*{seconds}"
        return f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"

    def evaluate(name: str, args: list[str]) -> str:
        if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter") \
                and not args[0]:
            raise MacroError(f"missing time column argument for macro {name}")
        match name:
            case "__time":
                return f'{args[0]} AS "time"'
            case "__timeEpoch":
                return f'extract(epoch from {args[0]}) as "time"'
            case "__timeFilter":
                return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
            case "__timeFrom":
                return f"'{_rfc3339(start)}'"
            case "__timeTo":
                return f"'{_rfc3339(end)}'"
            case "__timeGroup" | "__unixEpochGroup":
                return group(args, "$" + name)
            case "__timeGroupAlias" | "__unixEpochGroupAlias":
                return group(args, "$" + name.removesuffix("Alias")) + ' AS "time"'
            case "__unixEpochFilter":
                return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
            case "__unixEpochNanoFilter":
                return f"{args[0]} >= {nanos(start)} AND {args[0]} <= {nanos(end)}"
            case "__unixEpochNanoFrom":
                return str(nanos(start))
            case "__unixEpochNanoTo":
                return str(nanos(end))
        raise MacroError(f"unknown macro {name!r}")

    def replace(m: re.Match) -> str:
        name, args = m.group(1), [a.strip(" ") for a in m.group(2).split(",")]
        if name == "__timeGroup":  # pre-5.3: a comma right after the first such call adds AS "time"
            at = sql.find(m.group(0)) + len(m.group(0))
            if sql[at:at + 1] == ",":
                name = "__timeGroupAlias"
        return evaluate(name, args)

    return _MACRO.sub(replace, sql)


def test_expand_matches_grafanas_own_cases():
    """The cases of Grafana's macros_test.go (PostgreSQL, TimescaleDB off)."""
    start = dt.datetime(2018, 4, 12, 18, 0, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(minutes=5)
    minute = dt.timedelta(minutes=1)

    def x(sql: str) -> str:
        return expand(sql, start, end, minute)

    assert x("select $__time(time_column)") == 'select time_column AS "time"'
    assert x("select min($__time(time_column))") == 'select min(time_column AS "time")'
    assert x("WHERE $__timeFilter(time_column)") == \
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    assert x("select $__timeFrom()") == "select '2018-04-12T18:00:00Z'"
    assert x("select $__timeTo()") == "select '2018-04-12T18:05:00Z'"
    assert x("SELECT $__timeGroup(time_column,'5m'), value") == \
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    assert x("SELECT $__timeGroup(time_column,'5m') as time, value") == \
        "SELECT floor(extract(epoch from time_column)/300)*300 as time, value"
    assert x("SELECT $__timeGroup(time_column,'5m')") == "SELECT floor(extract(epoch from time_column)/300)*300"
    assert x("$__timeGroupAlias(time_column , '5m')") == \
        'floor(extract(epoch from time_column)/300)*300 AS "time"'
    assert x("select $__unixEpochFilter(time)") == f"select time >= {int(start.timestamp())} AND time <= {int(end.timestamp())}"
    assert x("select $__unixEpochNanoFilter(time)") == \
        f"select time >= {int(start.timestamp()) * 10**9} AND time <= {int(end.timestamp()) * 10**9}"
    assert x("select $__unixEpochNanoFrom()") == f"select {int(start.timestamp()) * 10**9}"
    assert x("SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')") == \
        'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"'
    half = dt.datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=dt.timezone.utc)
    assert expand("$__timeFilter(t)", half, half, minute) == \
        "t BETWEEN '1960-02-01T07:00:00.5Z' AND '1960-02-01T07:00:00.5Z'"
    # comments go first; the interval text is Grafana's
    assert expand("SELECT $__interval -- $__timeFilter(x)\n", start, end, dt.timedelta(minutes=10)) == "SELECT 10m \n"
    assert expand("SELECT $__interval_ms, '-- kept'", start, end, dt.timedelta(seconds=90)) == "SELECT 90000, '-- kept'"
    assert format_interval(dt.timedelta(hours=36)) == "1d"
    with pytest.raises(MacroError, match="unknown macro"):
        x("SELECT $__timeFitler(t)")
    with pytest.raises(MacroError, match="fill value"):
        x("SELECT $__timeGroupAlias(t, '1h', zero)")


# ====================================================================================
# Provisioning and dashboard structure
# ====================================================================================

def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def provisioned_datasources() -> dict[str, dict]:
    return {ds["uid"]: ds for ds in load_yaml(DATASOURCES_FILE)["datasources"]}


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def all_panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))   # collapsed rows hold their panels


_ENV_REF = re.compile(r"^(\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$__(env|file)\{[^}]+\})$")


def test_provisioned_datasources():
    config = load_yaml(DATASOURCES_FILE)
    assert config["apiVersion"] == 1
    sources = config["datasources"]
    assert {ds["uid"] for ds in sources} == {LOYALTY_DS, MONITORING_DS}
    assert len({ds["name"] for ds in sources}) == len(sources)
    for ds in sources:
        assert ds["type"] == PG_TYPE and ds["access"] == "proxy", ds["uid"]
        assert ds.get("editable") is False, ds["uid"]
        # where and who come from the environment; the password only from there
        for value in (ds["url"], ds["user"], ds["jsonData"]["database"], ds["jsonData"]["sslmode"],
                      ds["secureJsonData"]["password"]):
            assert _ENV_REF.match(str(value)), f"{ds['uid']}: {value!r} is not an environment reference"
        assert set(ds["secureJsonData"]) == {"password"} and "password" not in ds
        assert ds["jsonData"]["maxOpenConns"] <= 4, "keep few connections to the production database"
        parse_interval(ds["jsonData"]["timeInterval"])


def test_dashboard_provider():
    config = load_yaml(PROVIDERS_FILE)
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False and provider["disableDeletion"] is True


def test_dashboards_structure():
    dashboards = load_dashboards()
    datasources = provisioned_datasources()
    assert set(dashboards) == {"loyalty-checks.json", "loyalty-platform.json"}
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)

    def check_ref(ref: dict, where: str) -> None:
        assert ref == BUILTIN_GRAFANA or (ref.get("uid") in datasources and ref.get("type") == PG_TYPE), \
            f"{where}: data source {ref} is not provisioned"

    def check_target(target: dict, ds: dict, where: str) -> None:
        assert target.get("datasource", ds) == ds, f"{where}: the target's data source differs from the panel's"
        assert target["rawQuery"] is True and target["editorMode"] == "code", where
        assert target["format"] in ("table", "time_series"), where
        assert target["rawSql"].strip(), f"{where}: empty rawSql"

    for name, d in dashboards.items():
        assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]), name
        assert d["title"] and d["description"] and "loyalty" in d["tags"], name
        assert d.get("id") is None, f"{name}: a provisioned dashboard has no id"
        assert d["editable"] is False and d["timezone"] == "utc", name
        assert d["templating"]["list"] == [], f"{name}: template variables are not expanded by these tests"
        for annotation in d["annotations"]["list"]:
            check_ref(annotation["datasource"], f"{name}: annotation {annotation['name']}")
            if not annotation.get("builtIn"):
                check_target(annotation["target"], annotation["datasource"], f"{name}: annotation {annotation['name']}")
        panels = list(all_panels(d["panels"]))
        assert len({p["id"] for p in panels}) == len(panels), f"{name}: duplicate panel ids"
        queried = [p for p in panels if p["type"] != "row"]
        assert len({p["title"] for p in queried}) == len(queried), f"{name}: duplicate panel titles"
        for p in panels:
            where = f"{name}: panel {p['title']!r}"
            pos = p["gridPos"]
            assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, where
            if p["type"] == "row":
                continue
            assert p["description"], f"{where}: say what the panel shows"
            check_ref(p["datasource"], where)
            assert p["datasource"]["type"] == PG_TYPE, where
            assert p["targets"], f"{where}: no targets"
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), where
            for target in p["targets"]:
                check_target(target, p["datasource"], where)


# ====================================================================================
# Every query, run
# ====================================================================================

@dataclass(frozen=True)
class Query:
    dashboard: str          # uid
    title: str              # panel title, or "annotation: <name>"
    datasource: str         # uid
    target: dict
    panel: dict | None      # None for annotations
    time_from: str          # the dashboard's default range, e.g. now-24h
    time_to: str

    @property
    def key(self) -> tuple[str, str]:
        return self.dashboard, self.title

    @property
    def is_time_series(self) -> bool:
        return self.target["format"] == "time_series"

    def min_interval(self, datasources: dict) -> dt.timedelta:
        text = (self.panel or {}).get("interval") or datasources[self.datasource]["jsonData"]["timeInterval"]
        return parse_interval(text)


def collect_queries() -> list[Query]:
    queries = []
    for d in load_dashboards().values():
        time_range = (d["time"]["from"], d["time"]["to"])
        for annotation in d["annotations"]["list"]:
            if not annotation.get("builtIn"):
                queries.append(Query(d["uid"], f"annotation: {annotation['name']}", annotation["datasource"]["uid"],
                                     annotation["target"], None, *time_range))
        for p in all_panels(d["panels"]):
            for target in p.get("targets", []):
                title = p["title"] if len(p["targets"]) == 1 else f"{p['title']} [{target['refId']}]"
                queries.append(Query(d["uid"], title, p["datasource"]["uid"], target, p, *time_range))
    return queries


QUERIES = collect_queries()

# The columns every query returns, in order: a change to a panel's SQL is a change here.
EXPECTED_COLUMNS = {
    ("loyalty-checks", "annotation: Loyalty alerts"): ["time", "text", "tags"],
    ("loyalty-checks", "Checks firing now"): ["firing", "pending", "checks"],
    ("loyalty-checks", "Silenced now"): ["whole_checks", "entities"],
    ("loyalty-checks", "Since the latest evaluation"): ["P0", "P1", "P2"],
    ("loyalty-checks", "Current state per check"): [
        "check", "severity", "state", "since", "last_evaluated", "last_result", "value", "fires_when",
        "breaching_entities", "silenced", "silenced_until", "error"],
    ("loyalty-checks", "Check status over time"): ["time", "metric", "state"],
    ("loyalty-checks", "Active silences"): ["id", "check", "entity", "starts_at", "ends_at", "author", "reason"],
    ("loyalty-checks", "Undelivered notifications"): [
        "time", "check", "event", "channel", "attempts", "last_error", "run_id"],
    ("loyalty-checks", "Notifications sent"): ["time", "metric", "notifications"],
    ("loyalty-checks", "Evaluation errors"): ["time", "check", "dag", "run_id", "error"],
    ("loyalty-checks", "Alert quality over the range"): [
        "check", "severity", "notifications", "pages", "episodes", "flaps", "firing_share", "median_resolve",
        "longest_resolve", "errors", "evaluations"],
    ("loyalty-platform", "annotation: Loyalty alerts"): ["time", "text", "tags"],
    ("loyalty-platform", "Transactions per hour by store (top 10)"): ["time", "metric", "transactions"],
    ("loyalty-platform", "Stamps and points per hour"): [
        "time", "stamps added", "stamps redeemed", "points earned", "points redeemed", "points expired"],
    ("loyalty-platform", "Daily enrollments"): ["time", "enrollments"],
    ("loyalty-platform", "Top enrolling merchants"): ["merchant", "enrollments"],
    ("loyalty-platform", "Wallet adoption"): ["Google Wallet", "Apple Wallet", "Any wallet", "Active cards"],
    ("loyalty-platform", "Wallet adoption by merchant"): ["merchant", "active_cards", "google", "apple", "any_wallet"],
    ("loyalty-platform", "E-mail delivery funnel per template"): ["template", "sent", "delivered", "opened", "clicked"],
    ("loyalty-platform", "E-mail funnel and rates per template"): [
        "template", "created", "queued", "failed", "sent", "bounced", "delivered", "opened", "clicked",
        "delivery_rate", "open_rate", "click_rate"],
    ("loyalty-platform", "Task success rate, 24 h"): ["task", "success_rate"],
    ("loyalty-platform", "Task runs, 24 h"): [
        "task", "runs", "success", "failure", "revoked", "unfinished", "success_rate", "last_success",
        "hours_since_success"],
    ("loyalty-platform", "Task executions per hour"): ["time", "metric", "runs"],
    ("loyalty-platform", "Wallet sync duration"): ["time", "metric", "duration"],
}

NUMERIC = {"int2", "int4", "int8", "numeric", "float4", "float8"}
TEXT = {"text", "varchar", "bpchar", "name", "unknown"}
TIME = {"timestamptz", "timestamp", "date"}


def test_every_query_declares_its_columns():
    assert sorted(q.key for q in QUERIES) == sorted(EXPECTED_COLUMNS), \
        "EXPECTED_COLUMNS must list exactly the dashboards' queries"


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.title}")
def test_macros_also_expand_in_grafana_versions_that_keep_comments(query):
    """Before 12.x Grafana expanded macros inside comments too: the SQL must hold no
    `$name(` but real macros, anywhere."""
    expand(query.target["rawSql"], T - dt.timedelta(hours=1), T, dt.timedelta(minutes=1), strip_comments=False)


def resolve_relative(text: str, now: dt.datetime) -> dt.datetime:
    """now, now-24h, now-7d (Grafana's relative times, the forms the dashboards use)."""
    m = re.fullmatch(r"now(?:-(\d+)([smhdw]))?", text)
    assert m, f"unsupported relative time {text!r}"
    return now - (dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)]) if m.group(1) else dt.timedelta(0))


# ------------------------------------------------------------------ the test databases

# What Grafana's role may read, as docs/deploy.md grants it: the loyalty tables without
# their personal data (recipient, customer_email, e-mail error messages, Celery task
# arguments, results and tracebacks), and every loyalty_monitoring table.
GRAFANA_GRANTS: dict[str, tuple[str, ...] | None] = {   # table -> columns (None: all)
    "merchants": None, "stores": None, "loyalty_programs": None, "loyalty_transactions": None,
    "loyalty_wallet_sync_runs": None, "rate_limit_events": None,
    "loyalty_cards": ("id", "program_id", "merchant_id", "enrolled_store_id", "is_active", "enrolled_at",
                      "deactivated_at", "anonymized_at", "stamp_count", "points_balance", "last_activity_at",
                      "google_object_id", "apple_serial_number"),
    "email_logs": ("id", "template_code", "status", "merchant_id", "created_at", "sent_at"),
    "celery_taskmeta": ("id", "task_id", "status", "date_done", "name", "worker", "retries", "queue"),
}
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def test_deploy_doc_grants_grafana_what_the_tests_grant():
    text = " ".join(DEPLOY_DOC.read_text(encoding="utf-8").split())
    whole = re.search(r"GRANT SELECT ON ([\w, ]+?) TO loyalty_grafana;", text)
    assert whole, "docs/deploy.md: GRANT SELECT ON <tables> TO loyalty_grafana;"
    assert {t.strip() for t in whole.group(1).split(",")} == {t for t, cols in GRAFANA_GRANTS.items() if cols is None}
    for table, columns in GRAFANA_GRANTS.items():
        if columns is not None:
            m = re.search(rf"GRANT SELECT \(([\w, ]+)\) ON {table} TO loyalty_grafana;", text)
            assert m and {c.strip() for c in m.group(1).split(",")} == set(columns), table
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA loyalty_monitoring TO loyalty_grafana;" in text


def _at(minutes_before_t: float) -> dt.datetime:
    return T - dt.timedelta(minutes=minutes_before_t)


def _run_id(t: dt.datetime) -> str:
    return f"scheduled__{t.isoformat()}"


def fill_monitoring(conn) -> None:
    """A day of the check DAGs' records as of T: P0 every 5 min, P1 hourly, P2 weekly, with
    alerts that fired and resolved, a pending step, errors, silences (active and ended)
    and one notification that could not be delivered."""
    H = 60  # minutes
    evaluations, states = [], {}

    def evaluation(check, severity, dag, t, value, threshold, status="ok", alert="ok", entities=(),
                   silenced=False, error=None, comparison=">"):
        evaluations.append({
            "check_id": check, "evaluated_at": t, "severity": severity, "dag_id": dag, "run_id": _run_id(t),
            "status": status, "alert_status": alert, "value": value, "threshold": threshold,
            "comparison": comparison, "entities": json.dumps(list(entities)), "entities_total": 40 if entities else 0,
            "error": error, "silenced": silenced})
        if status != "error":
            previous = states.get(check)
            since = previous["since"] if previous and previous["status"] == alert else t
            states[check] = {"status": alert, "since": since, "t": t}
        else:
            states.setdefault(check, {"status": "ok", "since": t, "t": t})["t"] = t

    for k in range(24 * 12, -1, -1):                      # P0: every 5 minutes for 24 h
        t = _at(5 * k)
        minutes = 5 * k
        hours_stale = 31 - minutes / 60
        firing = hours_stale > 26
        evaluation("expiration_task_stale", "P0", "loyalty_p0_checks", t, hours_stale, 26,
                   "firing" if firing else "ok", "firing" if firing else "ok")
        if minutes == 3 * H:
            evaluation("google_wallet_down", "P0", "loyalty_p0_checks", t, None, 0.5, "error",
                       error="canceling statement due to statement timeout")
        elif 20 * H < minutes <= 21 * H or minutes <= 40:
            evaluation("google_wallet_down", "P0", "loyalty_p0_checks", t, 0.7, 0.5, "firing", "firing")
        elif minutes == 45:
            evaluation("google_wallet_down", "P0", "loyalty_p0_checks", t, 0.6, 0.5, "firing", "pending")
        else:
            evaluation("google_wallet_down", "P0", "loyalty_p0_checks", t, 0.02, 0.5)
    spikes = [{"id": "3", "name": "Burger <!channel> *Palace*", "value": 187}, {"id": "6", "name": "Café Zürich", "value": 131}]
    for h in range(24, -1, -1):                           # P1: hourly for 24 h
        t = _at(h * H)
        if h == 0:
            evaluation("wallet_sync_failures", "P1", "loyalty_p1_checks", t, None, 0.05, "error",
                       error="connection to server at \"loyalty-db\" failed: timeout expired")
        else:
            evaluation("wallet_sync_failures", "P1", "loyalty_p1_checks", t, 0.01, 0.05)
        failing = h <= 3
        evaluation("email_failure_rate", "P1", "loyalty_p1_checks", t, 0.03 if failing else 0.004, 0.01,
                   "firing" if failing else "ok", "firing" if failing else "ok", silenced=failing and h <= 2)
        evaluation("rate_limit_spikes", "P1", "loyalty_p1_checks", t, 187 if h <= 1 else 12, 100,
                   "firing" if h <= 1 else "ok", "firing" if h <= 1 else "ok", entities=spikes if h <= 1 else ())
        evaluation("p0_checks_stale", "P1", "loyalty_p1_checks", t, 5, 15)
    for weeks in (1, 0):                                  # P2: Monday 08:00
        t = T - dt.timedelta(weeks=weeks)
        evaluation("high_churn", "P2", "loyalty_p2_checks", t, 0.31, 0.2, "firing", "firing")
        evaluation("low_enrollment", "P2", "loyalty_p2_checks", t, 0, 5, "firing", "firing", comparison="<",
                   entities=[{"id": "13", "name": "Corner Bookshop", "value": 0}])
        evaluation("low_redemption_rate", "P2", "loyalty_p2_checks", t, 0.55, 0.3, comparison="<")

    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO loyalty_monitoring.evaluations (check_id, evaluated_at, severity, dag_id, run_id, status,"
            " alert_status, value, threshold, comparison, entities, entities_total, error, silenced)"
            " VALUES (%(check_id)s, %(evaluated_at)s, %(severity)s, %(dag_id)s, %(run_id)s, %(status)s,"
            " %(alert_status)s, %(value)s, %(threshold)s, %(comparison)s, %(entities)s, %(entities_total)s,"
            " %(error)s, %(silenced)s)", evaluations)
        cur.executemany(
            "INSERT INTO loyalty_monitoring.check_state (check_id, status, since, last_evaluated_at, last_run_id)"
            " VALUES (%s, %s, %s, %s, %s)",
            [(c, s["status"], s["since"], s["t"], _run_id(s["t"])) for c, s in states.items()])
        cur.executemany(
            "INSERT INTO loyalty_monitoring.silences (check_id, entity_id, starts_at, ends_at, reason, author)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [("rate_limit_spikes", "3", _at(30), _at(-120), "bot traffic, store contacted", "alice"),
             ("email_failure_rate", None, _at(2 * H), _at(-4 * H), "SMTP relay maintenance", "bob"),
             ("google_wallet_down", None, _at(20 * H), _at(18 * H), "Google Wallet API incident", "carol")])
        sent = [  # (check, T of the evaluation, event, channel, delivered)
            ("google_wallet_down", _at(21 * H - 5), "trigger", "pagerduty", True),
            ("google_wallet_down", _at(21 * H - 5), "trigger", "slack", True),
            ("google_wallet_down", _at(20 * H), "resolve", "pagerduty", True),
            ("google_wallet_down", _at(20 * H), "resolve", "slack", True),
            ("expiration_task_stale", _at(5 * H - 5), "trigger", "pagerduty", True),
            ("expiration_task_stale", _at(5 * H - 5), "trigger", "slack", True),
            ("google_wallet_down", _at(3 * H), "error", "pagerduty", True),
            ("google_wallet_down", _at(3 * H - 5), "error_resolve", "pagerduty", True),
            ("email_failure_rate", _at(3 * H), "trigger", "slack", True),
            ("rate_limit_spikes", _at(H), "trigger", "slack", True),
            ("google_wallet_down", _at(40), "trigger", "pagerduty", True),
            ("google_wallet_down", _at(40), "trigger", "slack", False),
            ("weekly_digest", T - dt.timedelta(weeks=1), "digest", "slack", True),
        ]
        cur.executemany(
            "INSERT INTO loyalty_monitoring.notifications (check_id, evaluated_at, event, channel, run_id,"
            " attempts, sent_at, last_error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(c, t, e, ch, _run_id(t), 1 if ok else 3, t + dt.timedelta(seconds=20) if ok else None,
              None if ok else "Slack webhook: HTTP 503 Service Unavailable") for c, t, e, ch, ok in sent])


@pytest.fixture(scope="module")
def grafana_dbs(pg):
    """{datasource uid: database} on the test server, and a role that may only SELECT
    what docs/deploy.md grants Grafana (GRAFANA_GRANTS)."""
    from demo.generate import generate
    from loyalty_checks.store import ensure_schema

    suffix = uuid.uuid4().hex[:10]
    loyalty, monitoring, role = f"grafana_loyalty_{suffix}", f"grafana_monitoring_{suffix}", f"grafana_reader_{suffix}"
    pg.create_database(loyalty, schema=True)
    pg.create_database(monitoring)
    try:
        with pg.connect(autocommit=True) as conn:
            conn.execute(pgsql.SQL("CREATE ROLE {} NOLOGIN").format(pgsql.Identifier(role)))
        with pg.connect(loyalty, autocommit=True) as conn:
            generate(conn, T)
            conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(pgsql.Identifier(role)))
            for table, columns in GRAFANA_GRANTS.items():
                conn.execute(pgsql.SQL("GRANT SELECT {} ON {} TO {}").format(
                    pgsql.SQL("({})").format(pgsql.SQL(", ").join(map(pgsql.Identifier, columns))) if columns
                    else pgsql.SQL(""), pgsql.Identifier(table), pgsql.Identifier(role)))
        with pg.connect(monitoring, autocommit=True) as conn:
            ensure_schema(conn)
            fill_monitoring(conn)
            conn.execute(pgsql.SQL("GRANT USAGE ON SCHEMA loyalty_monitoring TO {}").format(pgsql.Identifier(role)))
            conn.execute(pgsql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA loyalty_monitoring TO {}").format(
                pgsql.Identifier(role)))
        yield {"databases": {LOYALTY_DS: loyalty, MONITORING_DS: monitoring}, "role": role}
    finally:
        pg.drop_database(loyalty)
        pg.drop_database(monitoring)
        with pg.connect(autocommit=True) as conn:
            conn.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(role)))


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple]


@pytest.fixture(scope="module")
def run_query(pg, grafana_dbs):
    """run_query(datasource uid, sql, time_zone) -> Result: the SQL as Grafana's reader
    role, in a READ ONLY transaction with a statement timeout, rolled back."""
    conns = {uid: pg.connect(db) for uid, db in grafana_dbs["databases"].items()}

    def run(datasource: str, sql: str, time_zone: str = "UTC") -> Result:
        conn = conns[datasource]
        try:
            with conn.transaction(force_rollback=True), conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(grafana_dbs["role"])))
                cur.execute("SELECT set_config('TimeZone', %s, true), set_config('statement_timeout', '10s', true)",
                            (time_zone,))
                cur.execute(sql)
                types = [conn.adapters.types.get(c.type_code).name if conn.adapters.types.get(c.type_code) else "unknown"
                         for c in cur.description]
                return Result([c.name for c in cur.description], types, cur.fetchall())
        except psycopg.Error as e:
            pytest.fail(f"the query failed on PostgreSQL: {e}\n---\n{sql}")

    yield run
    for conn in conns.values():
        conn.close()


def check_frame(query: Query, result: Result) -> None:
    """What Grafana's SQL engine requires of a result before it draws it."""
    where = f"{query.dashboard}: {query.title}"
    assert result.columns == EXPECTED_COLUMNS[query.key], where
    if query.title.startswith("annotation:"):
        assert result.types[0] in TIME, f"{where}: an annotation's time must be a timestamp"
    if not query.is_time_series:
        return
    # time_series: a "time" column (first here), never NULL, ascending; values numeric,
    # text columns are series labels; one point per series and time (LongToWide).
    assert result.columns[0] == "time", f"{where}: a time series needs its time column first"
    assert result.types[0] in TIME | NUMERIC, where
    times = [row[0] for row in result.rows]
    assert None not in times, f"{where}: NULL time"
    assert times == sorted(times), f"{where}: rows must be sorted by time ascending"
    labels = [i for i, t in enumerate(result.types) if t in TEXT]
    for i, t in enumerate(result.types[1:], start=1):
        assert t in NUMERIC | TEXT, f"{where}: column {result.columns[i]} is {t}, neither a value nor a label"
    keys = [(row[0], *(row[i] for i in labels)) for row in result.rows]
    assert len(set(keys)) == len(keys), f"{where}: two points for one series at one time"


def field_names(query: Query, result: Result) -> set[str]:
    """The names Grafana gives the fields: the columns, or for a long time series of
    (time, metric, value) the metric values."""
    names = set(result.columns)
    if query.is_time_series and len(result.columns) == 3 and result.types[1] in TEXT:
        names |= {row[1] for row in result.rows}
    return names


def check_panel_config(query: Query, result: Result) -> None:
    """Field names the panel's options and overrides refer to exist in the result."""
    if query.panel is None:
        return
    where = f"{query.dashboard}: {query.title}"
    names = field_names(query, result)
    for override in query.panel["fieldConfig"]["overrides"]:
        matcher = override["matcher"]
        if matcher["id"] == "byName":
            assert matcher["options"] in names, f"{where}: override for a missing field {matcher['options']!r}"
        elif matcher["id"] == "byRegexp":
            assert any(re.fullmatch(matcher["options"], n) for n in names), \
                f"{where}: override regex {matcher['options']!r} matches no field"
    options = query.panel.get("options", {})
    fields = options.get("reduceOptions", {}).get("fields", "")
    if fields.startswith("/"):
        assert any(re.search(fields.strip("/"), c) for c in result.columns), f"{where}: reduceOptions.fields {fields}"
    if "xField" in options:
        assert options["xField"] in result.columns, f"{where}: xField {options['xField']}"


def dashboard_range(query: Query, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    return resolve_relative(query.time_from, now), resolve_relative(query.time_to, now)


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.title}")
def test_query_runs_on_the_demo_platform(query, run_query):
    """The dashboard's default range ending at T: the declared columns, rows, and no
    column that is NULL everywhere; the same result in another session time zone."""
    datasources = provisioned_datasources()
    start, end = dashboard_range(query, T)
    interval = max(query.min_interval(datasources), (end - start) / 1000)
    sql = expand(query.target["rawSql"], start, end, interval)
    result = run_query(query.datasource, sql)
    check_frame(query, result)
    check_panel_config(query, result)
    assert result.rows, f"{query.key}: no rows on the demo data\n{sql}"
    for i, column in enumerate(result.columns):   # a join that never matches shows here
        assert any(row[i] is not None for row in result.rows), f"{query.key}: {column} is NULL in every row"
    elsewhere = run_query(query.datasource, sql, time_zone="Pacific/Chatham")   # UTC+13:45
    assert elsewhere.rows == result.rows, f"{query.key}: the result depends on the session time zone"


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.dashboard}:{q.title}")
def test_query_runs_on_a_range_without_data(query, run_query):
    """Years before the platform existed: no error (division by zero, empty aggregates)."""
    start, end = dashboard_range(query, dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc))
    sql = expand(query.target["rawSql"], start, end, parse_interval("1h"))
    check_frame(query, run_query(query.datasource, sql))


# ------------------------------------------------------------------ what the panels say

def panel_result(run_query, title: str, dashboard: str = "loyalty-platform") -> list[dict]:
    [query] = [q for q in QUERIES if q.key == (dashboard, title)]
    start, end = dashboard_range(query, T)
    result = run_query(query.datasource, expand(query.target["rawSql"], start, end, parse_interval("1h")))
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def metric(run_query, name: str, window: dt.timedelta | None = None) -> dict[str, float]:
    """A digest metric of include/sql/metrics as of T: {label: value}."""
    text = (ROOT / "include" / "sql" / "metrics" / f"{name}.sql").read_text(encoding="utf-8")
    rows = run_query(LOYALTY_DS, _bind(text, window)).rows
    return {label: value for label, value in rows}


def _bind(text: str, window: dt.timedelta | None) -> pgsql.Composed:
    """The digest SQL with %(t)s and %(window)s bound client-side (run_query takes no params)."""
    parts = re.split(r"(%\(t\)s|%\(window\)s)", text.replace("%%", "%"))
    return pgsql.Composed([pgsql.Literal(T) if p == "%(t)s" else pgsql.Literal(window) if p == "%(window)s"
                           else pgsql.SQL(p) for p in parts])


def test_wallet_adoption_is_the_digest_metric(run_query):
    [panel] = panel_result(run_query, "Wallet adoption")
    digest = metric(run_query, "wallet_adoption")
    assert float(panel["Google Wallet"]) == pytest.approx(float(digest["google"]))
    assert float(panel["Apple Wallet"]) == pytest.approx(float(digest["apple"]))
    assert float(panel["Any wallet"]) == pytest.approx(float(digest["any"]))
    assert 0 < panel["Any wallet"] < 1


def test_task_runs_agree_with_the_digest_metric(run_query):
    rows = {r["task"]: r for r in panel_result(run_query, "Task runs, 24 h")}
    digest = metric(run_query, "celery_task_outcomes", dt.timedelta(hours=24))
    for task, row in rows.items():
        assert row["success"] == digest[f"{task} SUCCESS"] and row["failure"] == digest[f"{task} FAILURE"], task
    # the demo's incident: loyalty.expire_points last succeeded ~31 h before T
    assert rows["loyalty.expire_points"]["hours_since_success"] > 26
    assert rows["loyalty.expire_points"]["success_rate"] == 0
    assert 0.9 < rows["loyalty.sync_wallet_passes"]["success_rate"] <= 1


def test_email_funnel_is_monotonic_and_agrees_with_the_digest(run_query):
    funnel = panel_result(run_query, "E-mail delivery funnel per template")
    rates = {r["template"]: r for r in panel_result(run_query, "E-mail funnel and rates per template")}
    digest = metric(run_query, "email_status_distribution", dt.timedelta(days=7))   # {status: e-mails}
    for row in funnel:
        assert row["sent"] >= row["delivered"] >= row["opened"] >= row["clicked"] >= 0, row
        assert {k: rates[row["template"]][k] for k in row} == row
        r = rates[row["template"]]
        assert r["created"] == r["queued"] + r["failed"] + r["sent"]
        for rate in ("delivery_rate", "open_rate", "click_rate"):
            assert r[rate] is None or 0 <= r[rate] <= 1
    assert sum(r["created"] for r in rates.values()) == sum(digest.values())
    assert sum(r["clicked"] for r in funnel) == digest.get("clicked", 0)
    assert sum(r["delivered"] for r in funnel) == sum(digest.get(s, 0) for s in ("delivered", "opened", "clicked"))


def test_check_panels_show_the_alert_state(run_query):
    state = {r["check"]: r for r in panel_result(run_query, "Current state per check", "loyalty-checks")}
    assert state["expiration_task_stale"]["state"] == "firing"
    assert state["email_failure_rate"]["silenced"] == "whole check"
    assert state["rate_limit_spikes"]["silenced"] == "1 entity"
    assert state["wallet_sync_failures"]["last_result"] == "error" and state["wallet_sync_failures"]["error"]
    firing_first = [r["state"] for r in state.values()]
    assert firing_first == sorted(firing_first, key=lambda s: {"firing": 0, "pending": 1}.get(s, 2))
    [silences] = panel_result(run_query, "Silenced now", "loyalty-checks")
    assert silences == {"whole_checks": 1, "entities": 1}     # the ended silence is not counted
