"""The `given` rows of a check test (testing.py): times relative to T, tables and columns
checked against the database's own catalog, rows inserted with bound parameters only.

    T, T-30m, T+2h, T-7d, T-1w   relative to the step's T (units s, m, h, d, w)
    2026-11-16T10:00:00Z          absolute ISO 8601, UTC when it has no zone

A timestamptz column receives the instant; a `timestamp without time zone` column
(celery_taskmeta.date_done) its UTC wall time. Array columns take YAML lists, jsonb
columns any YAML value. Tables are those of the `public` and `loyalty_monitoring`
schemas, the latter named with its schema (`loyalty_monitoring.evaluations`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from loyalty_checks import units

UTC = dt.timezone.utc
SCHEMAS = ("public", "loyalty_monitoring")
RELATIVE = re.compile(r"^T\s*(?:([+-])\s*(\d+)\s*([smhdw]))?$")
MAX_REPEAT = 100_000


class FileError(ValueError):
    """A malformed test file; the message names the file, the step and the field."""


def parse_time(value: Any, t: dt.datetime | None = None) -> dt.datetime:
    """An aware datetime from ISO 8601 text (UTC if no zone) or, given T, `T-30m` etc."""
    text = value.strip() if isinstance(value, str) else None
    m = RELATIVE.match(text) if text else None
    if m and t is not None:
        sign, amount, unit = m.groups()
        delta = units.duration(f"{amount}{unit}") if unit else dt.timedelta(0)
        return t - delta if sign == "-" else t + delta
    try:
        return units.parse_time(text if not m else None)
    except ValueError:
        relative = " or relative to T: T, T-30m, T+2h, T-7d (units s, m, h, d, w)" if t is not None else ""
        raise ValueError(f"bad time {value!r}: expected ISO 8601 such as 2026-11-16T10:00:00Z{relative}") from None


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: dict[str, str]  # column -> information_schema data_type

    @property
    def label(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"


def tables(conn: psycopg.Connection) -> dict[str, Table]:
    """The tables rows may go to, by the names a test file may use."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    rows = conn.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ANY(%s) ORDER BY table_schema, table_name, ordinal_position",
        [list(SCHEMAS)]).fetchall()
    for schema, table, column, data_type in rows:
        found.setdefault((schema, table), {})[column] = data_type
    out = {}
    for (schema, name), columns in found.items():
        table = Table(schema, name, columns)
        out[f"{schema}.{name}"] = table
        if schema == "public":
            out[name] = table
    return out


@dataclass(frozen=True)
class Rows:
    """One `given` row, validated: inserted `repeat` times."""
    table: Table
    values: dict[str, Any]
    repeat: int
    field: str  # e.g. given.stores[0], for messages


def prepare(given: dict[str, list[dict[str, Any]]], known: dict[str, Table], t: dt.datetime,
            where: str) -> list[Rows]:
    """Validate a `given` mapping against the tables and convert its values; `where`
    names the file and step in errors."""
    out = []
    for name, rows in given.items():
        table = known.get(name)
        if table is None:
            names = ", ".join(sorted(k for k in known if not k.startswith("public.")))
            raise FileError(f"{where}, field 'given.{name}': unknown table {name!r} (known: {names})")
        for i, row in enumerate(rows):
            field = f"given.{name}[{i}]"
            values = dict(row)
            repeat = values.pop("repeat", 1)
            if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
                raise FileError(f"{where}, field '{field}.repeat': expected an integer from 1 to {MAX_REPEAT},"
                                f" got {repeat!r}")
            for column, value in values.items():
                data_type = table.columns.get(column) if isinstance(column, str) else None
                if data_type is None:
                    raise FileError(f"{where}, field '{field}.{column}': unknown column {column!r} of table"
                                    f" {table.label!r} (its columns: {', '.join(table.columns)})")
                try:
                    values[column] = _convert(value, data_type, t)
                except ValueError as exc:
                    raise FileError(f"{where}, field '{field}.{column}': {exc}") from None
            out.append(Rows(table, values, repeat, field))
    return out


def _convert(value: Any, data_type: str, t: dt.datetime) -> Any:
    if value is None:
        return None
    if data_type == "timestamp with time zone":
        return parse_time(value, t)
    if data_type == "timestamp without time zone":
        return parse_time(value, t).astimezone(UTC).replace(tzinfo=None)
    if data_type == "date":
        return parse_time(value, t).astimezone(UTC).date()
    if data_type == "ARRAY":
        if not isinstance(value, (list, str)):  # a YAML list, or PostgreSQL's '{1,2}'
            raise ValueError(f"expected a list for an array column, got {value!r}")
        return value
    if data_type in ("json", "jsonb"):
        return Jsonb(value)
    if data_type == "bytea" and isinstance(value, str):
        return value.encode()
    if isinstance(value, (dict, list)):
        raise ValueError(f"expected a single value for a {data_type} column, got {value!r}")
    return value


def insert(conn: psycopg.Connection, rows: list[Rows], where: str) -> None:
    """INSERT the rows (autocommit connection); a refused row is the file's mistake."""
    for row in rows:
        target = sql.Identifier(row.table.schema, row.table.name)
        if row.values:
            query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                target, sql.SQL(", ").join(map(sql.Identifier, row.values)),
                sql.SQL(", ").join([sql.Placeholder()] * len(row.values)))
        else:
            query = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target)
        try:
            with conn.cursor() as cur:
                cur.executemany(query, [list(row.values.values())] * row.repeat)
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0]
            raise FileError(f"{where}, field '{row.field}': {row.table.label} refused the row: {detail}") from None
