"""Time budgets: how long each task of a check DAG may take, and whether a run fits.

Pure arithmetic on the catalog (no Airflow, no database): `parse_catalog` calls
`check_catalog`, so a catalog whose worst case does not fit is an import error naming the
DAG, the check and the numbers; the factory sets each task's `execution_timeout` and
`retries` from `dag_budget`; `budget_table` is the table of each DAG's doc_md and of
docs/reliability.md.

The model (every number from the catalog, per DAG, a check may override its
`statement_timeout` and `connect_timeout`):

- one database wait (connections.py's guard) ends after `statement_timeout + grace`, then a
  cancel request takes at most `min(grace, 5 s)`;
- one HTTP send (Slack, PagerDuty) makes at most HTTP_ATTEMPTS requests of `http_timeout`
  each, with at most HTTP_BACKOFF_MAX between them;
- every task try gets TASK_START for the scheduler and the worker to start it;
- measure = connect + statement + grace + cancel + grace (the check's query), then
  connect + state statement + grace + 2 × grace (the lifecycle's record: measure decides,
  `decide` is an EmptyOperator without a process or a budget);
  notify, report_error = connect + state statement + grace + 2 sends + grace;
  heartbeat = http_timeout + grace;
- the error path (measure with all its retries and delays, then report_error with its
  retries, then heartbeat_failed) and the success path (measure, notify, heartbeat) must
  each fit in `run_timeout`, and `run_timeout` must be shorter than the schedule's
  interval, so that a run that cannot see is reported within the run and the next run
  starts on time (a run past `dagrun_timeout` would have its unfinished tasks skipped:
  report_error would never run);
- and so must the whole run when every check takes its worst path at once: measures
  wait for a slot of the `loyalty_db` pool (the catalog's `db_pool_slots`), every task
  for one of the DAG's `max_active_tasks`. The longest path, plus one more wave of
  measures for every further pool's worth of checks, plus one more wave of reports for
  every further max_active_tasks' worth (list scheduling: each wave waits for the one
  before it at worst).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

from loyalty_checks.units import cron_interval

# The catalog's models, by name only: the catalog imports this module to check itself.
Check = DagSpec = Any

HTTP_ATTEMPTS = 3                       # requests per send: the first and two retries
HTTP_BACKOFF = (1.0, 2.0)               # seconds before the 2nd and the 3rd request
HTTP_BACKOFF_MAX = 2.0                  # a 429's Retry-After is capped at this too
SENDS_PER_TASK = 2                      # a notify task may send two notices (e.g. error resolved + trigger)
TASK_START = timedelta(seconds=5)       # scheduler + worker start of one task try
CANCEL_MAX = timedelta(seconds=5)       # the guard's cancel request, at most
CHECK_CLIENT = timedelta(seconds=1)     # server side: how often a running query checks its client is there
STATE_TASK_RETRIES = 1                  # notify, report_error, heartbeat: one more try
STATE_STATEMENT_MAX = timedelta(seconds=30)  # alert-state statements are index lookups and small writes

DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
DEFAULT_GRACE = timedelta(seconds=5)
DEFAULT_HTTP_TIMEOUT = timedelta(seconds=10)


class BudgetError(ValueError):
    """A run of the catalog's DAG cannot fit its time limits (the catalog raises it as a
    CatalogError: an import error naming the DAG, the check and the numbers)."""


def _s(value: timedelta) -> float:
    return value.total_seconds()


@dataclass(frozen=True)
class DbTimeouts:
    """Time limits of one database connection (seconds)."""

    connect_timeout: float
    statement_timeout: float
    grace: float

    @classmethod
    def default(cls) -> "DbTimeouts":
        """For callers outside a check (silences, tools): generous, never unbounded."""
        return cls(connect_timeout=_s(DEFAULT_CONNECT_TIMEOUT), statement_timeout=300.0, grace=_s(DEFAULT_GRACE))

    @property
    def answer_within(self) -> float:
        """The client gives up on a wait for the server after this long."""
        return self.statement_timeout + self.grace

    @property
    def cancel_within(self) -> float:
        return min(self.grace, _s(CANCEL_MAX))

    @property
    def statement_ms(self) -> int:
        return max(1, int(self.statement_timeout * 1000))

    @property
    def answer_ms(self) -> int:
        return max(1, int(self.answer_within * 1000))

    @property
    def check_client_ms(self) -> int:
        return int(_s(CHECK_CLIENT) * 1000)

    @property
    def keepalives_idle(self) -> int:
        return max(1, math.ceil(self.grace))

    @property
    def keepalives_interval(self) -> int:
        return max(1, math.ceil(self.grace / 3))

    @property
    def keepalives_count(self) -> int:
        return 3

    def libpq(self) -> dict[str, int]:
        """libpq keyword arguments: connect timeout, keepalives, tcp_user_timeout (ms)."""
        return {
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),  # libpq's minimum is 2
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle,
            "keepalives_interval": self.keepalives_interval,
            "keepalives_count": self.keepalives_count,
            "tcp_user_timeout": self.answer_ms,
        }

    @property
    def one_wait(self) -> float:
        """Connect, then one wait that goes unanswered, then the cancel request."""
        return max(2.0, self.connect_timeout) + self.answer_within + self.cancel_within


def check_timeouts(spec: "DagSpec", check: "Check") -> DbTimeouts:
    """Limits of the check's own query (loyalty_db, or the monitoring database for its source)."""
    connect = getattr(check, "connect_timeout", None) or spec.connect_timeout
    return DbTimeouts(connect_timeout=_s(connect), statement_timeout=_s(check.statement_timeout), grace=_s(spec.grace))


def state_timeouts(spec: "DagSpec") -> DbTimeouts:
    """Limits of the alert-state connection (loyalty_monitoring_db) of the DAG's tasks."""
    return DbTimeouts(connect_timeout=_s(spec.connect_timeout),
                      statement_timeout=_s(min(spec.statement_timeout, STATE_STATEMENT_MAX)), grace=_s(spec.grace))


def send_seconds(spec: "DagSpec") -> float:
    """One notification sent, at worst: every request times out, with the backoffs between."""
    return HTTP_ATTEMPTS * _s(spec.http_timeout) + (HTTP_ATTEMPTS - 1) * max(HTTP_BACKOFF_MAX, *HTTP_BACKOFF)


@dataclass(frozen=True)
class TaskBudget:
    name: str
    execution_timeout: timedelta
    retries: int
    retry_delay: timedelta
    what: str

    @property
    def worst(self) -> timedelta:
        """Every try runs out its execution_timeout, with the retry delays between."""
        tries = self.retries + 1
        return tries * (self.execution_timeout + TASK_START) + self.retries * self.retry_delay

    @property
    def busy(self) -> timedelta:
        """How long it holds a slot at worst: every try, not the delays between them."""
        return (self.retries + 1) * (self.execution_timeout + TASK_START)


@dataclass(frozen=True)
class DagBudget:
    dag_id: str
    run_timeout: timedelta
    interval: timedelta
    tasks: dict[str, dict[str, TaskBudget]]   # check id -> task name -> budget
    heartbeat: TaskBudget | None

    def error_path(self, check_id: str) -> timedelta:
        t = self.tasks[check_id]
        return t["measure"].worst + t["report_error"].worst + (self.heartbeat.worst if self.heartbeat else timedelta())

    pool_slots: int = 4              # the loyalty_db pool's slots (catalog: db_pool_slots)
    max_active_tasks: int = 16       # the DAG's (catalog: dags.<severity>.max_active_tasks)
    pooled: tuple[str, ...] = ()     # the checks whose measure takes a loyalty_db pool slot

    def success_path(self, check_id: str) -> timedelta:
        t = self.tasks[check_id]
        after = t["notify"].worst if "notify" in t else timedelta()
        return t["measure"].worst + after + (self.heartbeat.worst if self.heartbeat else timedelta())

    def worst(self) -> tuple[str, str, timedelta]:
        """(check id, path name, duration) of the longest path of any check."""
        paths = [(cid, name, fn(cid)) for cid in self.tasks
                 for name, fn in (("error", self.error_path), ("success", self.success_path))]
        return max(paths, key=lambda p: p[2]) if paths else ("", "", timedelta())

    def waves(self) -> tuple[int, int]:
        """(measure waves, report waves) when every check runs at once: how many times
        the pool's slots and the DAG's max_active_tasks are filled, at worst."""
        n = len(self.tasks)
        measure_slots = min(self.pool_slots, self.max_active_tasks)
        return (max(math.ceil(len(self.pooled) / measure_slots), math.ceil(n / self.max_active_tasks)),
                math.ceil(n / self.max_active_tasks))

    def worst_run(self) -> tuple[timedelta, str]:
        """The whole run when every check takes its worst path at once, and how it adds up."""
        _, _, longest = self.worst()
        if not self.tasks:
            return longest, ""
        measure_waves, report_waves = self.waves()
        measure = max(t["measure"].busy for t in self.tasks.values())
        after = max(max(t[n].busy for n in ("report_error", "notify") if n in t) for t in self.tasks.values())
        total = longest + (measure_waves - 1) * measure + (report_waves - 1) * after
        detail = f"the longest path {fmt(longest)}"
        if measure_waves > 1:
            detail += (f" + {measure_waves - 1} more wave(s) of measures ({len(self.pooled)} on the loyalty_db"
                       f" pool's {self.pool_slots} slots, max_active_tasks {self.max_active_tasks}) × {fmt(measure)}")
        if report_waves > 1:
            detail += f" + {report_waves - 1} more wave(s) of reports × {fmt(after)}"
        return total, detail


def _r(seconds: float) -> timedelta:
    return timedelta(seconds=math.ceil(seconds))


def check_tasks(spec: "DagSpec", check: "Check") -> dict[str, TaskBudget]:
    db, state, grace = check_timeouts(spec, check), state_timeouts(spec), _s(spec.grace)
    send = send_seconds(spec)
    # Its routes' channels, and the pager when it may escalate (the catalog made that moot
    # when it pages anyway): a digest check sends nothing itself.
    routes = [r for r in (getattr(check, "routes", None) or spec.routes) if r != "digest"]
    channels = len(routes) + (getattr(check, "escalate_after", None) is not None)
    state_part = max(2.0, state.connect_timeout) + state.answer_within
    out = {
        "measure": TaskBudget(
            "measure", _r(db.one_wait + grace + state_part + 2 * grace), spec.retries, spec.retry_delay,
            f"connect {db.connect_timeout:g} s + statement {db.statement_timeout:g} s + grace {grace:g} s"
            f" + cancel {db.cancel_within:g} s + grace {grace:g} s; state: connect {state.connect_timeout:g} s"
            f" + statement {state.statement_timeout:g} s + grace {grace:g} s, + {2 * grace:g} s"),
        "report_error": TaskBudget(
            "report_error", _r(state_part + max(channels, 1) * send + grace), STATE_TASK_RETRIES, spec.retry_delay,
            f"state {state_part:g} s + {max(channels, 1)} send{'s' if channels > 1 else ''} × {send:g} s"
            f" + grace {grace:g} s"),
    }
    if channels:
        out["notify"] = TaskBudget(
            "notify", _r(state_part + SENDS_PER_TASK * send + grace), STATE_TASK_RETRIES, spec.retry_delay,
            f"state {state_part:g} s + {SENDS_PER_TASK} sends × {send:g} s + grace {grace:g} s")
    return out


def heartbeat_task(spec: "DagSpec") -> TaskBudget:
    return TaskBudget("heartbeat", _r(_s(spec.http_timeout) + _s(spec.grace)), STATE_TASK_RETRIES, spec.retry_delay,
                      f"HTTP {_s(spec.http_timeout):g} s + grace {_s(spec.grace):g} s")


def dag_budget(spec: "DagSpec", checks: Iterable["Check"], pool_slots: int = 4) -> DagBudget:
    checks = tuple(checks)
    return DagBudget(
        dag_id=spec.dag_id, run_timeout=spec.run_timeout, interval=cron_interval(spec.schedule),
        tasks={c.id: check_tasks(spec, c) for c in checks},
        heartbeat=heartbeat_task(spec) if spec.heartbeat else None,
        pool_slots=pool_slots, max_active_tasks=spec.max_active_tasks,
        pooled=tuple(c.id for c in checks if getattr(c, "source", "loyalty_db") == "loyalty_db"))


def fmt(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours >= 48 and not minutes and hours % 24 == 0:
        return f"{hours // 24} days"
    return f"{hours}h{minutes:02d}m"


def check_budget(spec: "DagSpec", checks: Iterable["Check"], where: str, pool_slots: int = 4) -> DagBudget:
    """Raise BudgetError when a run cannot report its own failures in time."""
    checks = tuple(checks)
    label = f"{where}: dags.{spec.severity} ({spec.dag_id})"
    for name in ("statement_timeout", "connect_timeout", "http_timeout", "run_timeout"):
        if getattr(spec, name) <= timedelta():
            raise BudgetError(f"{label}, field {name!r}: must be longer than 0s")
    for check in checks:
        for name in ("statement_timeout", "connect_timeout"):
            value = getattr(check, name, None)
            if value is not None and value <= timedelta():
                raise BudgetError(f"{where}: check {check.id!r}, field {name!r}: must be longer than 0s")
    budget = dag_budget(spec, checks, pool_slots)
    if budget.interval is not None and spec.run_timeout >= budget.interval:
        raise BudgetError(f"{label}, field 'run_timeout': {fmt(spec.run_timeout)} must be shorter than the"
                           f" schedule's interval ({spec.schedule!r}: {fmt(budget.interval)}), or runs would overlap")
    for check in checks:
        t = budget.tasks[check.id]
        for name, path in (("error", budget.error_path(check.id)), ("success", budget.success_path(check.id))):
            if path > spec.run_timeout:
                parts = ["measure", "report_error"] if name == "error" else ["measure", "notify"]
                detail = " + ".join(f"{p} {fmt(t[p].worst)} ({t[p].retries + 1} × {fmt(t[p].execution_timeout)}"
                                    f" + {t[p].retries} × {fmt(t[p].retry_delay)} delay)" for p in parts if p in t)
                if budget.heartbeat:
                    detail += f" + heartbeat {fmt(budget.heartbeat.worst)}"
                raise BudgetError(
                    f"{label}, check {check.id!r}: the worst {name} path takes {fmt(path)} ({detail}),"
                    f" longer than run_timeout {fmt(spec.run_timeout)}: lower statement_timeout,"
                    f" connect_timeout, grace, http_timeout, retries or retry_delay, or raise run_timeout")
    total, detail = budget.worst_run()
    if total > spec.run_timeout:
        raise BudgetError(
            f"{label}: {len(checks)} checks: when every check takes its worst path at once, the run takes"
            f" {fmt(total)} ({detail}), longer than run_timeout {fmt(spec.run_timeout)}: raise db_pool_slots"
            f" (and the loyalty_db pool) or max_active_tasks, lower the time limits, or split the checks"
            f" into shards")
    return budget


def budget_table(spec: "DagSpec", checks: Iterable["Check"], pool_slots: int = 4) -> str:
    """Markdown: the time budget of a DAG (doc_md, docs/reliability.md)."""
    checks = tuple(checks)
    budget = dag_budget(spec, checks, pool_slots)
    lines = [
        f"**Time budget** (checked when the catalog loads): run timeout {fmt(spec.run_timeout)}"
        + (f", schedule interval {fmt(budget.interval)}" if budget.interval else "")
        + f"; database connect {fmt(spec.connect_timeout)}, grace {fmt(spec.grace)},"
          f" HTTP {fmt(spec.http_timeout)} × {HTTP_ATTEMPTS} requests per send.",
        "",
        "| check | task | execution_timeout | tries | worst with retries | from |",
        "|---|---|---|---|---|---|",
    ]
    for check in checks:
        for name, tb in budget.tasks[check.id].items():
            lines.append(f"| `{check.id}` | {name} | {fmt(tb.execution_timeout)} | {tb.retries + 1}"
                         f" (delay {fmt(tb.retry_delay)}) | {fmt(tb.worst)} | {tb.what} |")
    if budget.heartbeat:
        hb = budget.heartbeat
        lines.append(f"| all | heartbeat, heartbeat_failed | {fmt(hb.execution_timeout)} | {hb.retries + 1}"
                     f" (delay {fmt(hb.retry_delay)}) | {fmt(hb.worst)} | {hb.what} |")
    if checks:
        cid, name, path = budget.worst()
        total, detail = budget.worst_run()
        lines += ["", f"Worst path: `{cid}`, {name} path, {fmt(path)} of {fmt(spec.run_timeout)}"
                      f" (every task try {fmt(TASK_START)} to start). Every check at its worst at once:"
                      f" {fmt(total)} ({detail})."]
    return "\n".join(lines)
