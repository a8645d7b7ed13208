"""Check tests as data, like `promtool test rules` (contract: spec/check-tests.md).

    python -m loyalty_checks.testing [--dsn URL] PATH...      # files, or folders of *.yaml

Each file runs on a fresh database made from include/sql/schema/loyalty.sql and
monitoring.sql (for checks that read loyalty_monitoring): on an embedded PostgreSQL
started once per process, or as temporary databases on the server of --dsn /
LOYALTY_PG_URI, dropped after. Then the real code path, step after step: the `given`
rows (testing_rows.py), then the DAGs' runner: `pipeline.measure` (the check's SQL file,
read only, bound T) and `pipeline.run` (threshold and lifecycle, the state carried from
step to step in a `MemoryStore`), and the `expect` fields given are compared. Nothing is
sent.

Output: one line per file (`ok` / `FAILED`), then for a failure the file, the step (its
index and `at`), the field, what was expected and what came out. Exit status: 0 all
pass, 1 a test failed, 2 a file is malformed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, TextIO

import psycopg
import yaml
from psycopg import sql
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from loyalty_checks import pipeline
from loyalty_checks.catalog import SQL_DIR, Catalog, CatalogError, Check, catalog, with_overrides
from loyalty_checks.channels import registry
from loyalty_checks.evaluate import Evaluation, MeasurementError
from loyalty_checks.lifecycle import Decision, Event, Notification, shown_status
from loyalty_checks.testing_rows import FileError, Rows, Table, insert, parse_time, prepare, tables

PASSED, FAILED, MALFORMED = 0, 1, 2
SCHEMA_FILES = (SQL_DIR / "schema" / "loyalty.sql", SQL_DIR / "schema" / "monitoring.sql")
STATUSES = ("ok", "pending", "firing", "no_data", "error")


# ---------------------------------------------------------------- the file format

def _entity_id(value: Any) -> Any:
    """Entity ids are text (the SQL's entity_id); YAML may write store 11 as a number."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


EntityId = Annotated[str, BeforeValidator(_entity_id)]
GivenRows = dict[str, list[dict[Any, Any]]]


def _channel(name: str) -> str:
    if name not in registry.names():
        raise ValueError(f"unknown channel {name!r} (registered: {', '.join(registry.names())})")
    return name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpectedNotification(_Model):
    event: Literal[tuple(e.value for e in Event)]
    channels: list[Annotated[str, AfterValidator(_channel)]]
    new: list[EntityId] | None = None
    recovered: list[EntityId] | None = None
    firing: list[EntityId] | None = None


class Expect(_Model):
    status: Literal[STATUSES] | None = None
    value: float | None = None
    entities: dict[EntityId, float] | None = None
    notify: list[ExpectedNotification] | None = None


class StepSpec(_Model):
    at: str
    given: GivenRows = {}
    expect: Expect = Expect()


class CheckTestFile(_Model):
    check: str
    description: str | None = None
    catalog: dict[str, Any] = {}
    given: GivenRows = {}
    steps: list[StepSpec] = Field(min_length=1)


_MODELS = {(): CheckTestFile, ("steps", 0): StepSpec, ("steps", 0, "expect"): Expect,
           ("steps", 0, "expect", "notify", 0): ExpectedNotification}


class _Loader(yaml.SafeLoader):
    """Safe YAML with times left as text (`at` and row values are parsed here, in UTC)
    and no duplicate keys (a second `rate_limit_events:` would drop the first's rows)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen and key != "<<":
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


@dataclass
class Step:
    label: str              # "steps[1] (at 2026-11-16T11:00:00Z)"
    t: dt.datetime
    rows: list[Rows]
    expect: Expect


@dataclass
class Plan:
    check: Check
    given: list[Rows]
    steps: list[Step]


def _field(loc: Sequence[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _describe(path: Path, raw: dict, exc: ValidationError) -> str:
    """The first pydantic error as `file: steps[i] (at ...), field 'x.y': what is wrong`."""
    err = exc.errors()[0]
    loc, where = tuple(err["loc"]), f"{path}:"
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        step = (raw.get("steps") or [])[loc[1]]
        at = step.get("at") if isinstance(step, dict) else None
        where, loc = f"{path}: steps[{loc[1]}]" + (f" (at {at})" if at else "") + ",", loc[2:]
    if err["type"] == "extra_forbidden":
        parent = tuple(0 if isinstance(p, int) else p for p in err["loc"][:-1])
        model = _MODELS.get(parent)
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model else ""
        msg = f"unknown field{allowed}"
    elif err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "value_error":  # our validators say what they expected and what they got
        msg = str(err["ctx"]["error"])
    else:
        msg = f"{err['msg']}, got {err['input']!r}"
    return f"{where} field {_field(loc)!r}: {msg}"


def load(path: Path, cat: Catalog, known: dict[str, Table]) -> Plan:
    """Read and validate one test file completely before anything runs."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        line = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise FileError(f"{path}: not valid YAML: {line}{exc.problem}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FileError(f"{path}: cannot read the test file: {exc}") from None
    if not isinstance(raw, dict):
        raise FileError(f"{path}: expected a mapping with check and steps, got {type(raw).__name__}")
    try:
        spec = CheckTestFile.model_validate(raw)
    except ValidationError as exc:
        raise FileError(_describe(path, raw, exc)) from None
    try:
        check = cat.check(spec.check)
    except KeyError:
        raise FileError(f"{path}: field 'check': unknown check {spec.check!r} "
                        f"(known: {', '.join(c.id for c in cat.checks)})") from None
    try:
        if spec.catalog:
            check = with_overrides(cat, spec.check, spec.catalog, where=f"{path}: field 'catalog'")
    except CatalogError as exc:
        raise FileError(str(exc)) from None
    times = []
    for i, s in enumerate(spec.steps):
        try:
            times.append(parse_time(s.at))
        except ValueError as exc:
            raise FileError(f"{path}: steps[{i}], field 'at': {exc}") from None
    given = prepare(spec.given, known, times[0], f"{path}: before the steps")
    steps = []
    for i, (s, t) in enumerate(zip(spec.steps, times, strict=True)):
        label = f"steps[{i}] (at {s.at})"
        steps.append(Step(label, t, prepare(s.given, known, t, f"{path}: {label}"), s.expect))
    return Plan(check, given, steps)


# ---------------------------------------------------------------- comparing

def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_show(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _same(expected: float | None, actual: float | None) -> bool:
    if expected is None or actual is None:
        return expected is actual
    return math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-12)


def _ids(entities: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("id")) for e in entities]


def _notice(n: Notification) -> dict[str, Any]:
    out = {"event": str(n.event), "channels": list(n.channels)}
    for name in ("new", "recovered", "firing"):
        if getattr(n, name):
            out[name] = _ids(getattr(n, name))
    return out


def _matches(expected: ExpectedNotification, n: Notification) -> bool:
    if expected.event != str(n.event) or sorted(set(expected.channels)) != sorted(n.channels):
        return False
    return all(getattr(expected, name) is None or getattr(expected, name) == _ids(getattr(n, name))
               for name in ("new", "recovered", "firing"))


def compare(step: Step, outcome: Evaluation | MeasurementError, decision: Decision, status: str) -> list[str]:
    """One line per expected field that differs: the step, the field, expected, actual."""
    expect, wrong = step.expect, []
    given = expect.model_fields_set

    def differs(name: str, expected: Any, actual: Any) -> None:
        wrong.append(f"{step.label}, field 'expect.{name}': expected {_show(expected)}, got {_show(actual)}")

    if "status" in given and expect.status != status:
        differs("status", expect.status, status)
    value = getattr(outcome, "value", None)
    if "value" in given and not _same(expect.value, value):
        differs("value", expect.value, value)
    if "entities" in given:
        actual = {str(e["id"]): e["value"] for e in getattr(outcome, "entities", [])}
        expected = expect.entities or {}
        if list(actual) != list(expected) or not all(_same(expected[k], actual[k]) for k in expected):
            differs("entities", expected, actual)
    if "notify" in given:
        notes, expected_notes = decision.notifications, expect.notify or []
        if len(notes) != len(expected_notes) or not all(map(_matches, expected_notes, notes)):
            differs("notify", [e.model_dump(exclude_none=True) for e in expected_notes], [_notice(n) for n in notes])
    if wrong and isinstance(outcome, MeasurementError):
        wrong.append(f"{step.label}: the check could not be evaluated: {outcome.message}")
    return wrong


# ---------------------------------------------------------------- databases

class Server:
    """Where the fresh databases are made: the server of a DSN, or an embedded one.

    `fresh()` copies the template (schema only); the next copy is made in the background
    while a file runs, and `release()` drops a database, also in the background.
    """

    def __init__(self, dsn: str | None = None):
        self.dsn, self._embedded, self.template = dsn, None, None
        self._pool, self._spare = ThreadPoolExecutor(max_workers=1), None

    def __enter__(self) -> Server:
        if self.dsn is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    import pgserver
                except ImportError:
                    raise SystemExit("the embedded PostgreSQL needs the pgserver package; "
                                     "pass --dsn or set LOYALTY_PG_URI") from None
            data_dir = tempfile.mkdtemp(prefix="loyalty-pg-")  # a Unix socket path stays short
            self._embedded = pgserver.get_server(data_dir, cleanup_mode="delete")
            self.dsn = psycopg.conninfo.make_conninfo(host=data_dir, user="postgres", dbname="postgres")
        self.template = self.create(f"loyalty_checktest_tmpl_{uuid.uuid4().hex[:8]}")
        with self.connect(self.template) as conn:
            for schema in SCHEMA_FILES:
                conn.execute(schema.read_text(encoding="utf-8"))
        return self

    def __exit__(self, *exc) -> None:
        if self._spare is not None:
            self.release(self._spare.result())
        self._pool.shutdown(wait=True)
        if self.template:
            self.drop(self.template)
        if self._embedded is not None:
            self._embedded.cleanup()

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        info = psycopg.conninfo.make_conninfo(self.dsn, dbname=dbname) if dbname else self.dsn
        return psycopg.connect(info, autocommit=True)

    def create(self, name: str, template: str | None = None) -> str:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.connect() as conn:
            conn.execute(query)
        return name

    def fresh(self) -> str:
        """A new database from the template, yours until `release`."""
        spare = self._spare or self._pool.submit(self._copy)
        self._spare = self._pool.submit(self._copy)
        return spare.result()

    def release(self, name: str) -> None:
        self._pool.submit(self.drop, name)

    def _copy(self) -> str:
        return self.create(f"loyalty_checktest_{uuid.uuid4().hex[:10]}", template=self.template)

    def drop(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------- running

@dataclass
class Result:
    path: Path
    code: int
    lines: list[str] = field(default_factory=list)


def run_file(path: Path, server: Server, cat: Catalog, known: dict[str, Table]) -> Result:
    """One file on its own fresh database."""
    try:
        plan = load(path, cat, known)
    except FileError as exc:
        return Result(path, MALFORMED, [str(exc)])
    name = server.fresh()
    wrong: list[str] = []
    try:
        with server.connect(name) as conn:
            insert(conn, plan.given, f"{path}: before the steps")
            store = pipeline.MemoryStore()
            for step in plan.steps:
                insert(conn, step.rows, f"{path}: {step.label}")
                decision = pipeline.run(plan.check, pipeline.measure(plan.check, step.t, conn), store)
                wrong += compare(step, decision.outcome, decision, shown_status(decision.outcome.status, decision.state.status))
    except FileError as exc:
        return Result(path, MALFORMED, [str(exc)])
    finally:
        server.release(name)
    return Result(path, FAILED, [f"{path}: {w}" for w in wrong]) if wrong else Result(path, PASSED)


def find_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Files as given and the *.yaml files of folders (sorted); and the paths not found."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.yaml"))
            files += found
            problems += [] if found else [f"{p}: no *.yaml test file in this folder"]
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    return files, problems



def run(paths: Sequence[str | Path], dsn: str | None = None, out: TextIO | None = None) -> int:
    """Run the test files under `paths`; prints the report to `out`, returns the exit status."""
    out = out or sys.stdout
    files, problems = find_files(paths)
    if problems or not files:
        print("\n".join(problems or ["no test file given"]), file=out)
        return MALFORMED
    try:
        cat = catalog()
    except CatalogError as exc:
        print(f"the check catalog is invalid: {exc}", file=out)
        return MALFORMED
    results = []
    try:
        with Server(dsn or os.environ.get("LOYALTY_PG_URI") or None) as server:
            with server.connect(server.template) as conn:
                known = tables(conn)
            for path in files:
                result = run_file(path, server, cat, known)
                results.append(result)
                print(f"{'ok' if result.code == PASSED else 'FAILED':<7} {path}", file=out)
                for line in result.lines:
                    print(f"  {line}", file=out)
                out.flush()
    except psycopg.OperationalError as exc:
        print(f"cannot run the tests on PostgreSQL: {str(exc).strip()}", file=out)
        return MALFORMED
    counts = [sum(r.code == c for r in results) for c in (PASSED, FAILED, MALFORMED)]
    print(f"{len(results)} files: {counts[0]} passed, {counts[1]} failed, {counts[2]} malformed", file=out)
    return max(r.code for r in results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loyalty_checks.testing",
                                     description="Run check tests written as YAML (spec: check-tests.md).")
    parser.add_argument("--dsn", help="a PostgreSQL server to create the temporary databases on (a URL or"
                                      " libpq conninfo; default LOYALTY_PG_URI, else an embedded server)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="test files, or folders of *.yaml files")
    args = parser.parse_args(argv)
    return run(args.paths, dsn=args.dsn)


if __name__ == "__main__":
    sys.exit(main())
