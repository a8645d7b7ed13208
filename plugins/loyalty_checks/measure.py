"""Run a check's SQL as of time T on a DB-API connection and shape its rows.

SQL contract (include/sql/README.md): bound parameters %(t)s (T, timestamptz),
%(window)s (interval or NULL) and the check's `params`. A check without entities
returns one row with a `value` column (NULL or no row = no data); a check with
entities returns one row per entity with `entity_id`, `entity_name`, `value`. Any
other column is kept as a detail. A check with a `baseline` returns hourly counts instead
(shape_hourly): `entity_id`, `entity_name`, `hour_start`, `value` (the count of that UTC
hour), `first_seen`, for the hours of `baseline.span` before T (bound as %(window)s;
%(baseline_window)s and %(min_expected)s are bound too).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Iterator

from loyalty_checks.catalog import Check, DigestMetric
from loyalty_checks.store import read_only
from loyalty_checks.units import hour_floor


@dataclass(frozen=True)
class Measurement:
    """The measure stage's output: what the check's SQL said at T, before any threshold
    (`value`, `details`, `entities`: see shape_rows), or why it could not say (`error`)."""
    check_id: str
    t: dt.datetime
    value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    entities: list[dict[str, Any]] | None = None
    error: str | None = None
    hourly: Any = None   # a baseline check's counts: baseline.HourlyCounts (entities: id and name only)

    @classmethod
    def failed(cls, check_id: str, t: dt.datetime, exc: BaseException | str) -> Measurement:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return cls(check_id, t, error=text[:2000])

    def rows(self) -> dict[str, Any]:
        """{'value', 'details', 'entities'}: what evaluate.py compares with the threshold."""
        if self.error is not None:
            raise CheckSqlError(f"{self.check_id} at {self.t.isoformat()}: {self.error}")
        return {"value": self.value, "details": self.details, "entities": self.entities, "hourly": self.hourly}


class CheckSqlError(RuntimeError):
    """The check's SQL ran but returned something the contract does not allow."""


def sql_parameters(item: Check | DigestMetric, t: dt.datetime) -> dict[str, Any]:
    params = dict(getattr(item, "params", {}) or {})
    params["t"] = t
    baseline = getattr(item, "baseline", None)
    params["window"] = baseline.span if baseline is not None else item.window
    if baseline is not None:  # what the SQL may use to leave out entities that cannot be judged
        params["baseline_window"], params["min_expected"] = baseline.window, baseline.min_expected
    return params


def fetch(conn, sql: str, params: dict[str, Any], timeout: dt.timedelta, app: str) -> tuple[list[str], list[tuple]]:
    """Run one query in its own read-only transaction (psycopg 3), always rolled back."""
    with read_only(conn, timeout, app):
        with conn.cursor() as cur:
            cur.execute(sql, params)
            if cur.description is None:
                raise CheckSqlError("the SQL returned no result set (it must be a SELECT)")
            columns = [d[0] for d in cur.description]
            return columns, cur.fetchall()


def jsonable(value: Any) -> Any:
    """Database values as JSON-friendly Python values (XCom, state tables, payloads)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, memoryview)):
        raise CheckSqlError("binary columns are not allowed in check results")
    return value


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise CheckSqlError(f"{where}: column 'value' must be numeric, got {type(value).__name__} {value!r}")
    return float(value)


def shape_hourly(check: Check, columns: list[str], rows: list[tuple]) -> dict[str, Any]:
    """A baseline check's rows as a measurement: the entities (id, name) and their hourly
    counts (baseline.HourlyCounts)."""
    from loyalty_checks.baseline import HourlyCounts

    where = f"check {check.id!r} ({check.sql_path})"
    required = ["entity_id", "entity_name", "hour_start", "value", "first_seen"]
    missing = [c for c in required if c not in columns]
    if missing:
        raise CheckSqlError(f"{where}: result lacks column {missing[0]!r}; got columns {columns}")
    at = [columns.index(c) for c in required]
    names: dict[str, str] = {}
    counts = []
    for row in rows:
        entity_id, name, hour, value, first_seen = (row[i] for i in at)
        if entity_id is None:
            raise CheckSqlError(f"{where}: column 'entity_id' must not be NULL")
        if first_seen is None or not isinstance(first_seen, dt.datetime):
            raise CheckSqlError(f"{where}: column 'first_seen' must be a timestamptz, got {first_seen!r}")
        if hour is not None and not isinstance(hour, dt.datetime):
            raise CheckSqlError(f"{where}: column 'hour_start' must be a timestamptz, got {hour!r}")
        key = str(entity_id)
        names.setdefault(key, str(name) if name is not None else key)
        counts.append((key, hour, _number(value, where) or 0.0, first_seen))
    try:
        hourly = HourlyCounts.from_rows(counts)
    except ValueError as exc:
        raise CheckSqlError(f"{where}: {exc}") from None
    return {"value": None, "details": {}, "hourly": hourly,
            "entities": [{"id": key, "name": name} for key, name in names.items()]}


def shape_rows(check: Check, columns: list[str], rows: list[tuple]) -> dict[str, Any]:
    """Turn result rows into a measurement: {'value', 'details', 'entities'} (a baseline
    check's: shape_hourly).

    For a check with entities, `value` is None and every entity carries its own value;
    entities with a NULL value are dropped (nothing was measured for them).
    """
    if check.baseline is not None:
        return shape_hourly(check, columns, rows)
    where = f"check {check.id!r} ({check.sql_path})"
    required = ["value"] + (["entity_id", "entity_name"] if check.entity else [])
    missing = [c for c in required if c not in columns]
    if missing:
        raise CheckSqlError(f"{where}: result lacks column {missing[0]!r}; got columns {columns}")
    if check.entity is None:
        if len(rows) > 1:
            raise CheckSqlError(f"{where}: expected at most one row, got {len(rows)}")
        record = dict(zip(columns, rows[0], strict=True)) if rows else {"value": None}
        value = _number(record.pop("value"), where)
        return {"value": value, "details": {k: jsonable(v) for k, v in record.items()}, "entities": None}

    entities = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        value = _number(record.pop("value"), where)
        if value is None:
            continue
        entity_id = record.pop("entity_id")
        if entity_id is None:
            raise CheckSqlError(f"{where}: column 'entity_id' must not be NULL")
        name = record.pop("entity_name")
        entities.append({
            "id": str(entity_id),
            "name": str(name) if name is not None else str(entity_id),
            "value": value,
            **{k: jsonable(v) for k, v in record.items()},
        })
    return {"value": None, "details": {}, "entities": entities}


def measure(check: Check, t: dt.datetime, conn, sql: str | None = None,
            app_prefix: str = "loyalty_checks") -> Measurement:
    """The check's SQL (its file, or `sql` as Airflow rendered it) as of T, read only; a
    failure is a Measurement too (its `error`)."""
    try:
        text = sql if sql is not None else check.sql_path.read_text(encoding="utf-8")
        columns, rows = fetch(conn, text, sql_parameters(check, t), check.statement_timeout,
                              f"{app_prefix}:{check.id}")
        return Measurement(check.id, t, **shape_rows(check, columns, rows))
    except Exception as exc:  # noqa: BLE001 - every failure of a check is reported, not raised
        return Measurement.failed(check.id, t, exc)


def measure_many(check: Check, times: Iterable[dt.datetime], conn, batch: int = 500) -> Iterator[Measurement]:
    """`measure` for every T, in order (backtests): one prepared statement for all T, one
    read-only transaction per `batch` evaluations. A failing T rolls its transaction back
    and is a failed Measurement; the next T starts a new transaction."""
    import psycopg

    if check.baseline is not None:
        yield from _measure_many_hourly(check, list(times), conn)
        return
    sql = check.sql_path.read_text(encoding="utf-8")
    pending = iter(times)
    current = next(pending, None)
    while current is not None:
        try:
            with read_only(conn, check.statement_timeout, f"loyalty_checks:backtest:{check.id}"):
                with conn.cursor() as cur:
                    for _ in range(batch):
                        cur.execute(sql, sql_parameters(check, current), prepare=True)
                        try:
                            if cur.description is None:
                                raise CheckSqlError("the SQL returned no result set (it must be a SELECT)")
                            columns = [d[0] for d in cur.description]
                            yield Measurement(check.id, current, **shape_rows(check, columns, cur.fetchall()))
                        except Exception as exc:  # noqa: BLE001 - the check's result broke its contract
                            yield Measurement.failed(check.id, current, exc)
                        current = next(pending, None)
                        if current is None:
                            break
        except psycopg.Error as exc:
            failed, current = current, next(pending, None)
            yield Measurement.failed(check.id, failed, exc)


def _measure_many_hourly(check: Check, times: list[dt.datetime], conn) -> Iterator[Measurement]:
    """A baseline check at every T from one query: the hourly counts of the whole period
    (its span before the first T, up to the last), judged at each T by the decide stage,
    which reads only the hours before T."""
    if not times:
        return
    first, last = min(times), max(times)
    params = sql_parameters(check, last)
    params["window"] = check.baseline.span + (hour_floor(last) - hour_floor(first))
    params["min_expected"] = None  # every entity: which ones can be judged differs from T to T
    try:
        sql = check.sql_path.read_text(encoding="utf-8")
        timeout = max(check.statement_timeout, dt.timedelta(minutes=10))  # the whole period at once
        columns, rows = fetch(conn, sql, params, timeout, f"loyalty_checks:backtest:{check.id}")
        shaped = shape_hourly(check, columns, rows)
    except Exception as exc:  # noqa: BLE001 - the period could not be measured: each T says so
        for t in times:
            yield Measurement.failed(check.id, t, exc)
        return
    for t in times:
        yield Measurement(check.id, t, **shaped)


def digest_metric(conn, metric: DigestMetric, t: dt.datetime, timeout: dt.timedelta) -> list[dict[str, Any]]:
    """Rows of (label, value) of an informational digest metric."""
    sql = metric.sql_path.read_text(encoding="utf-8")
    columns, rows = fetch(conn, sql, sql_parameters(metric, t), timeout, f"loyalty_checks:{metric.id}")
    if columns[:2] != ["label", "value"]:
        raise CheckSqlError(f"digest metric {metric.id!r} ({metric.sql_path}): expected columns label, value; got {columns}")
    return [{"label": str(r[0]), "value": jsonable(r[1])} for r in rows]
