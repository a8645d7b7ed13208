"""Backtest a check: what would it have sent over a period, with these settings?

    python -m loyalty_checks.backtest --check rate_limit_spikes \\
        --start 2026-11-16T00:00:00+00:00 --end 2026-11-17T00:00:00+00:00 \\
        [--set threshold=150]... [--sweep threshold=80:200:10] [--catalog FILE] [--dsn URL] \\
        [--json out.json] [--plot out.png]

Every scheduled T of the check's DAG in (start, end] (its cron: P0 every 5 minutes, P1
hourly, P2 weekly), in order: the check's own SQL file as of T on loyalty_db (or on the
check's `source`; `--dsn` for any server), in read-only transactions with the statement
timeout, one prepared statement reused across T (measure.measure_many); each through the
DAGs' runner (`pipeline.run`, a `MemoryStore`) from a clean state and without silences. Nothing is sent,
nothing is written. The figures come from quality.Tally, the same code that reports what
the alerts really did (spec/backtest.md). Bad input exits 2 naming it; a failing
evaluation is an `error` event, counted in `errors`.

`--set FIELD=VALUE` (repeatable; values as YAML reads them) changes a catalog field for
this run, and the current catalog's result is shown beside it (`baseline`). `--sweep
FIELD=FROM:TO:STEP` runs one variant per candidate: variants that share the SQL and its
parameters (threshold, recovery threshold and lifecycle fields) share one evaluation of
the SQL per T, so a sweep costs about as much as one backtest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from loyalty_checks import quality
from loyalty_checks.catalog import Catalog, CatalogError, Check, catalog, load_catalog, with_overrides
from loyalty_checks.measure import measure_many
from loyalty_checks.quality import UsageError, parse_time
from loyalty_checks.units import cron_interval, cron_times, duration, duration_text

UTC = dt.timezone.utc
SERIES_ENTITIES = 5         # entities drawn in the plot: the worst few
SERIES_TRACKED = 200        # entities whose values are kept while running (pruned to the worst)
MAX_CANDIDATES = 200
# Fields that do not change the SQL or its parameters: variants differing only there
# share one evaluation of the SQL per T.
SQL_FREE_FIELDS = ("threshold", "recovery_threshold", "for_runs", "clear_runs", "repeat_after", "escalate_after")
NUMBER_FIELDS = ("threshold", "recovery_threshold", "baseline.tail", "baseline.min_expected")
COUNT_FIELDS = ("for_runs", "clear_runs")
DURATION_FIELDS = ("repeat_after", "escalate_after", "window", "baseline.window", "baseline.history",
                   "baseline.min_history")


class BacktestError(UsageError):
    """Bad input to a backtest (unknown check or field, bad time or sweep): exit 2."""


# ---------------------------------------------------------------- input

def parse_overrides(items: Iterable[str] | dict[str, Any] | None) -> dict[str, str]:
    """'field=value' lines (CLI --set, the DAG's overrides param) as {field: value text}."""
    if isinstance(items, dict):
        return {str(k).strip(): "null" if v is None else str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for raw in items or []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        field, sep, value = line.partition("=")
        if not sep or not field.strip():
            raise BacktestError(f"--set: expected FIELD=VALUE (e.g. threshold=150), got {raw!r}")
        out[field.strip()] = value.strip()
    return out


def yaml_value(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError as exc:
        raise BacktestError(f"{where}: not a valid value: {text!r} ({exc.__class__.__name__})") from None


def resolve(cat: Catalog, check_id: str, overrides: dict[str, str], where: str = "--set") -> Check:
    """The check with `overrides` applied, validated like the catalog; BacktestError names the problem."""
    if check_id not in {c.id for c in cat.checks}:
        raise BacktestError(f"--check: unknown check {check_id!r} (known: {', '.join(c.id for c in cat.checks)})")
    if not overrides:
        return cat.check(check_id)
    values = {k: yaml_value(v, f"{where} {k}") for k, v in overrides.items()}
    try:
        return with_overrides(cat, check_id, values, where=where)
    except CatalogError as exc:
        raise BacktestError(str(exc)) from None


def _number(text: str, where: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise BacktestError(f"{where}: {text!r} is not a number") from None
    if not value.is_finite():
        raise BacktestError(f"{where}: {text!r} is not a number")
    return value


def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """'threshold=80:200:10' -> ('threshold', ['80', '90', ..., '200']) as value texts
    (durations step in seconds: 'repeat_after=1h:6h:1h')."""
    field, sep, rng = spec.partition("=")
    field = field.strip()
    parts = rng.split(":")
    if not sep or len(parts) != 3:
        raise BacktestError(f"--sweep: expected FIELD=FROM:TO:STEP (e.g. threshold=80:200:10), got {spec!r}")
    numeric = field in NUMBER_FIELDS + COUNT_FIELDS or field.startswith("params.")
    if field in DURATION_FIELDS or (field.startswith("params.") and parse_duration_or_none(parts[0])):
        lo, hi, step = (Decimal(int(parse_duration_or_fail(p, f"--sweep {field}").total_seconds())) for p in parts)
        render: Callable[[Decimal], str] = lambda v: duration_text(dt.timedelta(seconds=int(v)))  # noqa: E731
    elif numeric:
        lo, hi, step = (_number(p, f"--sweep {field}") for p in parts)
        if field in COUNT_FIELDS and any(v != v.to_integral_value() for v in (lo, hi, step)):
            raise BacktestError(f"--sweep {field}: FROM, TO and STEP must be whole numbers, got {rng!r}")
        render = lambda v: format(v.normalize(), "f") if v != v.to_integral_value() else str(int(v))  # noqa: E731
    else:
        allowed = ", ".join(NUMBER_FIELDS + COUNT_FIELDS + DURATION_FIELDS) + ", params.NAME"
        raise BacktestError(f"--sweep: field {field!r} cannot be swept (allowed: {allowed})")
    if step <= 0 or hi < lo:
        raise BacktestError(f"--sweep {field}: needs FROM <= TO and STEP > 0, got {rng!r}")
    count = int((hi - lo) / step) + 1
    if count > MAX_CANDIDATES:
        raise BacktestError(f"--sweep {field}: {count} candidates, at most {MAX_CANDIDATES}")
    return field, [render(lo + i * step) for i in range(count)]


def parse_duration_or_none(text: str) -> dt.timedelta | None:
    try:
        return duration(text.strip())
    except ValueError:
        return None


def parse_duration_or_fail(text: str, where: str) -> dt.timedelta:
    value = parse_duration_or_none(text)
    if value is None:
        raise BacktestError(f"{where}: expected a duration like 30m, 2h, 1d, got {text!r}")
    return value


def period(start: str | dt.datetime, end: str | dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start_t = parse_time(start, "--start") if isinstance(start, str) else _utc(start)
    end_t = parse_time(end, "--end") if isinstance(end, str) else _utc(end)
    if end_t <= start_t:
        raise BacktestError(f"--end {end_t.isoformat()} is not after --start {start_t.isoformat()}")
    return start_t, end_t


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


# ---------------------------------------------------------------- settings

def _plain(value: float | None) -> float | int | None:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def settings(check: Check) -> dict[str, Any]:
    """The fields a backtest can change, as YAML would write them."""
    out: dict[str, Any] = {
        "threshold": _plain(check.threshold), "comparison": check.comparison,
        "recovery_threshold": _plain(check.recovery_threshold), "window": duration_text(check.window),
        "for_runs": check.for_runs, "clear_runs": check.clear_runs,
        "repeat_after": duration_text(check.repeat_after), "escalate_after": duration_text(check.escalate_after),
    }
    for name, value in sorted(check.params.items()):
        out[f"params.{name}"] = duration_text(value) if isinstance(value, dt.timedelta) else value
    if check.baseline is not None:
        b = check.baseline
        out.update({"baseline.season": b.season, "baseline.history": duration_text(b.history),
                    "baseline.min_history": duration_text(b.min_history), "baseline.window": duration_text(b.window),
                    "baseline.min_expected": _plain(b.min_expected), "baseline.tail": b.tail})
    return out


def _sql_signature(check: Check) -> tuple:
    """What the measurement depends on: variants with the same one share it (a baseline's
    tail or min_expected do not change its SQL; its span does)."""
    return (check.sql, check.window, tuple(sorted((k, str(v)) for k, v in check.params.items())),
            check.statement_timeout, check.source, check.entity,
            check.baseline.span if check.baseline is not None else None)


# ---------------------------------------------------------------- measuring

# ---------------------------------------------------------------- replaying

class _Series:
    """Values over time for the plot: the check's value, or each entity's (the worst kept)."""

    def __init__(self, check: Check):
        self.check = check
        self.times: list[dt.datetime] = []
        self.entities: dict[str, dict[str, Any]] = {}

    def add(self, t: dt.datetime, outcome) -> None:
        i = len(self.times)
        self.times.append(t)
        if not hasattr(outcome, "all_entities"):
            return
        if self.check.entity is None:
            found = [{"id": "_", "name": self.check.title, "value": outcome.value}] if outcome.value is not None else []
        else:
            found = outcome.all_entities
        for e in found:
            if e["value"] is None:  # a baseline check's entity it could not judge
                continue
            s = self.entities.get(e["id"])
            if s is None:
                s = self.entities[e["id"]] = {"name": e["name"], "points": [], "worst": self._key(e)}
            s["points"].append((i, e["value"]))
            s["worst"] = min(s["worst"], self._key(e))
            if e.get("band"):  # a baseline check's usual range at this T
                s.setdefault("bands", []).append((i, *e["band"]))
        if len(self.entities) > 2 * SERIES_TRACKED:
            self._prune(SERIES_TRACKED)

    def _key(self, e: dict[str, Any]) -> float:
        """Worst first: the most breaching value; a baseline check's smallest p-value."""
        if self.check.baseline is not None:
            return e.get("p_value") if e.get("p_value") is not None else 1.0
        return self.check.worst_first_key(e["value"])

    def _prune(self, keep: int) -> None:
        ranked = sorted(self.entities.items(), key=lambda kv: kv[1]["worst"])
        self.entities = dict(ranked[:keep])

    def to_json(self) -> dict[str, Any]:
        ranked = sorted(self.entities, key=lambda k: self.entities[k]["worst"])
        chosen = ranked[:SERIES_ENTITIES]
        out = []
        for key in chosen:
            s = self.entities[key]
            values: list[float | None] = [None] * len(self.times)
            for i, v in s["points"]:
                values[i] = v
            out.append({"id": key, "name": s["name"], "values": values})
            if "bands" in s:
                low: list[float | None] = [None] * len(self.times)
                high: list[float | None] = [None] * len(self.times)
                for i, lo, hi in s["bands"]:
                    low[i], high[i] = lo, hi
                out[-1].update(low=low, high=high)
        return {"t": [t.isoformat() for t in self.times], "entities": out}


class Variant:
    """One set of settings replayed through the lifecycle, tallied as the spec says."""

    def __init__(self, check: Check, interval: dt.timedelta, series: bool = False):
        from loyalty_checks.pipeline import MemoryStore

        self.check = check
        self.store = MemoryStore()
        self.tally = quality.Tally(interval)
        self.series = _Series(check) if series else None

    def step(self, measurement) -> None:
        from loyalty_checks.evaluate import MeasurementError
        from loyalty_checks.pipeline import run

        decision = run(self.check, measurement, self.store)
        outcome, t = decision.outcome, measurement.t
        notes = [{"event": str(n.event), "channels": list(n.channels),
                  "entities": quality.notification_entities(n.to_dict())} for n in decision.notifications]
        self.tally.add(t, str(decision.state.status), isinstance(outcome, MeasurementError), notes)
        if self.series is not None:
            self.series.add(t, outcome)

    def result(self) -> dict[str, Any]:
        return {"settings": settings(self.check), "notifications": self.tally.notifications,
                "episodes": self.tally.episodes_json(), "summary": self.tally.summary()}


def replay_all(conn, variants: list[Variant], times: Callable[[], Iterable[dt.datetime]], expected: int,
               progress: Callable[[int, int], None] | None = None) -> None:
    """Feed every T (`times()` streams them) to every variant: one measuring pass per
    distinct SQL signature. `expected` (T per pass) only sizes the progress."""
    groups: dict[tuple, list[Variant]] = {}
    for v in variants:
        groups.setdefault(_sql_signature(v.check), []).append(v)
    total, done = expected * len(groups), 0
    for members in groups.values():
        for measurement in measure_many(members[0].check, times(), conn):
            for v in members:
                v.step(measurement)
            done += 1
            if progress is not None:
                progress(done, max(total, done))
    if progress is not None:
        progress(done, done)


def run_backtest(check_id: str, start: str | dt.datetime, end: str | dt.datetime,
                 overrides: dict[str, str] | Iterable[str] | None, conn, cat: Catalog | None = None, *,
                 sweep: str | None = None, series: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The backtest as the spec's JSON (with `series` for plot_png when asked).

    `overrides` are {field: value text} (or 'field=value' lines); `sweep` is
    'FIELD=FROM:TO:STEP'. Raises BacktestError on bad input, before any query.
    """
    cat = cat or catalog()
    overrides = parse_overrides(overrides)
    start_t, end_t = period(start, end)
    check = resolve(cat, check_id, overrides)
    candidates: list[tuple[str, Check]] = []
    if sweep:
        field, values = parse_sweep(sweep)
        candidates = [(value, resolve(cat, check_id, {**overrides, field: value}, where="--sweep")) for value in values]
    spec = cat.dags[check.severity]
    interval = cron_interval(spec.schedule)
    expected = max(1, int((end_t - start_t) / interval))
    main = Variant(check, interval, series=series)
    baseline = Variant(cat.check(check_id), interval) if overrides else None
    swept = [Variant(c, interval) for _, c in candidates]
    started = time.perf_counter()
    replay_all(conn, [main, *([baseline] if baseline else []), *swept],
               lambda: cron_times(spec.schedule, start_t, end_t), expected, progress)
    seconds = time.perf_counter() - started
    out = main.result()
    result: dict[str, Any] = {
        "check": check_id, "start": start_t.isoformat(), "end": end_t.isoformat(),
        "dag_id": cat.dag_id_of(check), "schedule": spec.schedule, "overrides": overrides,
        "settings": out["settings"], "evaluations": main.tally.evaluations, "errors": main.tally.errors,
        "notifications": out["notifications"], "episodes": out["episodes"], "summary": out["summary"],
        "seconds": round(seconds, 3),
    }
    if baseline is not None:
        result["baseline"] = baseline.result()
    if sweep:
        result["sweep_field"] = sweep.partition("=")[0].strip()
        result["sweep"] = [{"value": yaml.safe_load(value), "summary": v.tally.summary()}
                           for (value, _), v in zip(candidates, swept, strict=True)]
    if series:
        result["series"] = {**main.series.to_json(), "threshold": check.threshold,
                            "recovery_threshold": check.recovery_threshold, "comparison": check.comparison,
                            "baseline_threshold": baseline.check.threshold if baseline else None,
                            "metric": check.metric, "unit": check.unit, "title": check.title,
                            "entity": check.entity}
    return result


def without_series(result: dict[str, Any]) -> dict[str, Any]:
    """The result as the spec's JSON (the plot's series left out)."""
    return {k: v for k, v in result.items() if k != "series"}


# ---------------------------------------------------------------- output

def _setting(value: Any) -> str:
    return "—" if value is None else str(value)


def report_text(result: dict[str, Any]) -> str:
    """The terminal summary: settings and figures (beside the baseline), notifications, sweep."""
    rate = result["evaluations"] / result["seconds"] if result.get("seconds") else 0
    out = [f"Backtest of {result['check']} ({result['dag_id']}, cron {result['schedule']!r}) over "
           f"({result['start']}, {result['end']}]: {result['evaluations']} evaluations, {result['errors']} errors, "
           f"{result.get('seconds', 0):.1f} s ({rate:,.0f} evaluations/s). Nothing was sent or written.", ""]
    cols = [("with --set" if "baseline" in result else "current catalog", result)]
    if "baseline" in result:
        cols.insert(0, ("current catalog", result["baseline"]))
    names = list(dict.fromkeys(k for _, r in cols for k in r["settings"]))
    rows = [[n] + [_setting(r["settings"].get(n)) for _, r in cols] for n in names]
    rows.append([""] * (len(cols) + 1))
    for key in ("notifications", "pages", "episodes", "flaps", "firing_share", "median_resolve_seconds",
                "longest_resolve_seconds", "errors"):
        cells = []
        for _, r in cols:
            v = r["summary"].get(key)
            cells.append(f"{v * 100:.1f}%" if key == "firing_share" else
                         quality.format_seconds(v) if key.endswith("_seconds") else str(v))
        rows.append([key.replace("_seconds", "").replace("_", " ")] + cells)
    head = [""] + [c for c, _ in cols]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    notes = result["notifications"]
    out += ["", f"Notifications ({len(notes)}){' — first 30' if len(notes) > 30 else ''}:"]
    for n in notes[:30]:
        ents = f"  entities {', '.join(n['entities'][:8])}{' …' if len(n['entities']) > 8 else ''}" if n["entities"] else ""
        out.append(f"  {n['t']}  {n['event']:<13} -> {', '.join(n['channels']):<18}{ents}")
    if not notes:
        out.append("  none")
    if "sweep" in result:
        out += ["", f"Threshold suggestion (a suggestion only: one backtest per candidate {result['sweep_field']},"
                    " the other settings as above; pick with these numbers in front of you):", ""]
        out.append(quality.summary_table([(str(s["value"]), s["summary"]) for s in result["sweep"]],
                                         first=result["sweep_field"]))
    return "\n".join(out)


def plot_png(result: dict[str, Any], path_or_file) -> None:
    """A PNG of the value (the worst few entities) against the threshold over time, the
    firing episodes shaded and the notifications marked; with a sweep, a second panel
    with notifications, pages and episodes per candidate. Needs run_backtest(series=True)."""
    from loyalty_checks import backtest_plot

    backtest_plot.plot_png(result, path_or_file)


# ---------------------------------------------------------------- CLI

def _connection(check: Check, dsn: str | None):
    from loyalty_checks import connections

    return connections.cli_db(dsn, None if dsn else connections.source_conn_id(check), check=check)


class _Progress:
    """'n / total' on stderr every second for runs that last (never for short ones)."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label, self.stream = label, stream
        self.started = self.last = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 1.0 and done < total:
            return
        if not self.shown and done >= total:
            return
        self.last, self.shown = now, True
        rate = done / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate else 0
        self.stream.write(f"\r{self.label}: {done:,}/{total:,} evaluations ({rate:,.0f}/s, ~{eta:.0f} s left)  ")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loyalty_checks.backtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", required=True, help="the check id")
    ap.add_argument("--start", required=True, help="ISO 8601 start (exclusive; UTC when no offset)")
    ap.add_argument("--end", required=True, help="ISO 8601 end (inclusive)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a catalog field for this backtest (repeatable)")
    ap.add_argument("--sweep", metavar="FIELD=FROM:TO:STEP", help="one backtest per candidate value")
    ap.add_argument("--catalog", type=Path, help="a catalog file (default include/checks.yaml or LOYALTY_CHECKS_CATALOG)")
    ap.add_argument("--dsn", help="PostgreSQL URL to read from (default: the Airflow connection loyalty_db)")
    ap.add_argument("--json", type=Path, help="write the result (spec/backtest.md) as JSON")
    ap.add_argument("--plot", type=Path, help="write a PNG plot")
    args = ap.parse_args(argv)
    try:
        cat = load_catalog(args.catalog) if args.catalog else catalog()
        overrides = parse_overrides(args.overrides)
        period(args.start, args.end)
        check = resolve(cat, args.check, overrides)
        if args.sweep:
            field, values = parse_sweep(args.sweep)
            for value in values:
                resolve(cat, args.check, {**overrides, field: value}, where="--sweep")
        if args.plot and args.plot.suffix.lower() != ".png":
            raise BacktestError(f"--plot: expected a .png file, got {str(args.plot)!r}")
    except (UsageError, CatalogError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    import psycopg

    try:
        with _connection(check, args.dsn) as conn:
            result = run_backtest(args.check, args.start, args.end, overrides, conn, cat, sweep=args.sweep,
                                  series=bool(args.plot), progress=_Progress(f"backtest {args.check}"))
    except psycopg.OperationalError as exc:  # no server: nothing was evaluated (failing SQL is an `error` event)
        print(f"backtest: cannot connect to the database: {exc}", file=sys.stderr)
        return 1
    print(report_text(result))
    if args.json:
        args.json.write_text(json.dumps(without_series(result), indent=1) + "\n", encoding="utf-8")
    if args.plot:
        plot_png(result, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
