"""Build the check DAGs from the catalog: the three DAG files call `build_dags(severity)`
(one DAG per severity, or `shards` of them).

Per check, a task group named after the check:

    measure ──> decide ──> notify_pagerduty / notify_slack
       └──────> report_error (only when measure failed after its retries)

`measure` runs the SQL metric, the threshold and the lifecycle in one process and skips
the notify tasks with nothing to send; `decide`, the threshold branch in the grid, is an
EmptyOperator: the scheduler completes it without starting a process. A quiet check
costs one task process.

P2 checks are evaluated the same way but report in one weekly digest task. Groups are
built statically from the catalog (no mapped task groups: branching inside them does
not skip, apache/airflow#67265), and no branch is the direct upstream of a join
(apache/airflow#55187). Parsing reads only the catalog file.

A task process builds only its own task (parsing.py): starting a task costs the same
whatever the number of checks.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TaskGroup, TriggerRule, task

from loyalty_checks import budget, tasks
from loyalty_checks.catalog import DIGEST, Catalog, Check, DagSpec, Severity, catalog
from loyalty_checks.channels import registry
from loyalty_checks.lifecycle import channels_used
from loyalty_checks.parsing import build, in_group, running_dag, running_task
from loyalty_checks.text import format_duration, rule_text

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# Caps concurrent check queries on the production database. Create it once:
#   airflow pools set loyalty_db 4 "Concurrent check queries on loyalty_db"
POOL = "loyalty_db"
DIGEST_TEXT = "one weekly Slack digest (`slack_loyalty_reports`)"


def _route_text(route: str) -> str:
    return DIGEST_TEXT if route == DIGEST else registry.get(route).title


def _lifecycle_text(c: Check) -> str:
    parts = [f"fires after {c.for_runs} run(s), resolves after {c.clear_runs}"]
    if c.repeat_after:
        parts.append(f"reminds every {format_duration(c.repeat_after)}")
    if c.escalate_after is not None:
        parts.append(f"pages after {format_duration(c.escalate_after)}" if c.escalate_after else "pages at once")
    return "; ".join(parts)


def _grid_text(spec: DagSpec) -> str:
    """What the task colours mean, for the tasks this DAG has."""
    if spec.routes == (DIGEST,):
        return ("In the grid: `measure` green = the check was evaluated and recorded (`evaluate` follows it, "
                "without a process of its own); `measure` red = it could not be, and `report_error` reported it; "
                "`post_digest` sends the weekly digest and `fail_if_any_failed` turns the run red when a check "
                "failed.")
    return ("In the grid: `measure` runs the check's SQL, its threshold and its lifecycle; `decide` (the "
            "threshold branch, completed without a process of its own) green with `notify_*` skipped = "
            "evaluated, nothing new to say; `notify_*` green = a notification went out; `measure` red = the "
            "check could not be evaluated (or, with `report_error` skipped, not recorded), and `report_error` "
            "reported it.")


def _grafana_text(cat: Catalog) -> str:
    if not cat.grafana_url:
        return ""
    return (f"\nDashboards: [check status]({cat.grafana_url}/d/loyalty-checks) and"
            f" [platform metrics]({cat.grafana_url}/d/loyalty-platform) in Grafana.")


def _doc_md(spec: DagSpec, checks: tuple[Check, ...], cat: Catalog) -> str:
    # Narrow, so that the UI's doc dialog shows it whole; the long parts go in the list below.
    rows = "\n".join(
        f"| [`{c.id}`]({cat.runbook_link(c.id)}) | {rule_text(c)} "
        f"| {c.window_text or '—'} |" for c in checks)
    details = "\n".join(
        f"- [`{c.id}`]({cat.runbook_link(c.id)}) **{c.title}**: {c.metric}; {_lifecycle_text(c)}." for c in checks)
    routes = ", ".join(_route_text(r) for r in spec.routes)
    return f"""
### Loyalty {spec.severity} checks

Runs `{spec.schedule}` (UTC). Each check evaluates as of the run's logical time T on
`loyalty_db` (read only, statement timeout {format_duration(spec.statement_timeout)}), records the result in
`loyalty_monitoring_db` and notifies on changes (and reminders) only: **{routes}**.
Lifecycle, silences (the `loyalty_silences` DAG) and errors: docs/lifecycle.md.
What fires now, since when, what was sent and the silences: [the alert console](loyalty/?dag_id={spec.dag_id})
(also this DAG's **Alerts** tab).{_grafana_text(cat)}

| check (runbook) | fires when | window |
|---|---|---|
{rows}

{details}

{_grid_text(spec)} Thresholds live in `include/checks.yaml`.

{budget.budget_table(spec, checks, max(1, cat.db_pool_slots // spec.shards))}
"""


DECIDE_DOC = """The threshold branch. `measure` evaluated the threshold, recorded the decision
of the lifecycle and skipped the notify tasks with nothing to send (its log says what it
decided); this task marks that step in the grid and starts no process of its own."""


def _check_group(check: Check, spec: DagSpec, task_id: str | None):
    """measure -> decide -> notify_*; measure -> report_error (in a task process, only its task)."""
    tb = budget.check_tasks(spec, check)  # execution_timeout and retries of each task (budget.py)

    def limits(name: str) -> dict:
        return {"execution_timeout": tb[name].execution_timeout, "retries": tb[name].retries}

    # The check's routes (and PagerDuty when it may escalate); digest-only checks have none.
    channels = channels_used(check)
    decided = "decide" if channels else "evaluate"

    def measure():
        return tasks.CheckMetricOperator(task_id="measure", check_id=check.id, sql=check.sql,
                                         bound_parameters=tasks.bound_parameters_template(check),
                                         doc_md=f"**{check.title}**: {check.metric}",
                                         pool=POOL if check.source == "loyalty_db" else "default_pool",
                                         **limits("measure"))

    def report_error():
        @task(task_id="report_error", trigger_rule=TriggerRule.ONE_FAILED, **limits("report_error"))
        def report_error(**context):
            return tasks.report_error(check, context)
        return report_error()

    def notify(channel: str):
        @task(task_id=f"notify_{channel}", **limits("notify"))
        def notify(**context):
            return tasks.notify(check, channel, context)
        return notify()

    # measure decided already: the scheduler completes `decide` without a process (no callbacks).
    makers = {"measure": measure, "report_error": report_error,
              decided: lambda: EmptyOperator(task_id=decided, doc_md=DECIDE_DOC),
              **{f"notify_{ch}": (lambda ch=ch: notify(ch)) for ch in channels}}
    edges = [("measure", decided), ("measure", "report_error"), *((decided, f"notify_{ch}") for ch in channels)]
    with TaskGroup(group_id=check.id, tooltip=check.title) as group:
        build(makers, edges, task_id, check.id)
    return group


HEARTBEAT_DOC = """Pings an outside dead man's switch (Healthchecks.io, Cronitor...) when the run
finishes, through the HTTP connection `loyalty_heartbeat`. **Skipped is normal when that
connection is not defined**: there is then no outside heartbeat, and the P1 check
`p0_checks_stale` still pages when scheduled P0 runs stop. `heartbeat_failed` runs
instead of `heartbeat` when a check could not be evaluated."""


def _add_heartbeat(groups: list, spec: DagSpec, task_id: str | None) -> None:
    """Ping the dead man's switch (connection `loyalty_heartbeat`) when a P0 run finishes.

    `heartbeat` runs when every check was evaluated; `heartbeat_failed` when one could
    not be (it pings the connection's `fail_endpoint` if it has one).
    """

    hb = budget.heartbeat_task(spec)
    limits = {"execution_timeout": hb.execution_timeout, "retries": hb.retries}

    def heartbeat():
        @task(task_id="heartbeat", trigger_rule=TriggerRule.NONE_FAILED, doc_md=HEARTBEAT_DOC, **limits)
        def heartbeat():
            tasks.ping_heartbeat(failed=False, timeout=spec.http_timeout)
        return heartbeat()

    def heartbeat_failed():
        @task(task_id="heartbeat_failed", trigger_rule=TriggerRule.ONE_FAILED, doc_md=HEARTBEAT_DOC, **limits)
        def heartbeat_failed():
            tasks.ping_heartbeat(failed=True, timeout=spec.http_timeout)
        return heartbeat_failed()

    for made in build({"heartbeat": heartbeat, "heartbeat_failed": heartbeat_failed}, [], task_id).values():
        groups >> made


def build_dags(severity: str, cat: Catalog | None = None) -> list[DAG]:
    """The DAGs of one severity: one, or `dags.<severity>.shards` of them (`dag_id`,
    `dag_id_2`, ...), each with the task groups of its checks. A task process builds only
    the DAG it runs a task of."""
    cat = cat or catalog()
    specs = cat.shard_specs(severity)
    running = running_dag()
    if running in {s.dag_id for s in specs}:  # a task process of one of them: the others are not needed
        specs = tuple(s for s in specs if s.dag_id == running)
    return [build_dag(severity, cat, spec) for spec in specs]


def build_dag(severity: str, cat: Catalog | None = None, spec: DagSpec | None = None) -> DAG:
    """The DAG of one severity (or of one of its shards), with a task group per catalog check."""
    cat = cat or catalog()
    spec = spec or cat.shard_specs(severity)[0]
    checks = cat.checks_of(spec)
    task_id = running_task(spec.dag_id)
    with DAG(
        dag_id=spec.dag_id,
        description=(f"Loyalty {severity} checks" + (f" (shard {spec.shard} of {spec.shards})" if spec.shards > 1
                                                     else "") + ": " + ", ".join(c.id for c in checks)),
        schedule=spec.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=spec.max_active_tasks,
        dagrun_timeout=spec.run_timeout,
        template_searchpath=[str(cat.sql_dir)],
        tags=["loyalty", "monitoring", severity],
        doc_md=_doc_md(spec, checks, cat) if task_id is None else None,  # a task process shows no doc
        default_args={
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": spec.retry_delay,
            "execution_timeout": spec.run_timeout,
        },
    ) as dag:
        groups = [_check_group(check, spec, task_id) for check in checks if in_group(task_id, check.id)]
        if spec.heartbeat:
            _add_heartbeat(groups, spec, task_id)
        if DIGEST in spec.routes:
            from loyalty_checks.digest import add_digest

            add_digest(groups, cat, task_id)
    return dag


SILENCES_DOC = """
### Silences of the loyalty checks

A silenced check (or one store, merchant or provider of it) is still evaluated and
recorded, but notifies nobody until the silence ends. The easiest way is the
[alert console's silences page](loyalty/silences) (list, add, expire, as you). Here:
trigger this DAG with **action** `add` (check, optional entity, duration or end time,
optional start, reason), `expire` (silence id) or `list` (the task log lists them).

From a shell with the Airflow connections:

```
python -m loyalty_checks.silences add --check rate_limit_spikes --entity 42 --for 4h --reason "load test" --author alice
python -m loyalty_checks.silences list [--all]
python -m loyalty_checks.silences expire 7
```
"""


def build_silences_dag(cat: Catalog | None = None) -> DAG:
    """`loyalty_silences`: trigger it with params to add, end or list silences from the UI."""
    from airflow.sdk import Param

    cat = cat or catalog()
    ids = [c.id for c in cat.checks]
    ADD = {"section": "To add a silence"}  # noqa: N806
    with DAG(
        dag_id="loyalty_silences",
        description="Silence a loyalty check (or one store, merchant, provider of it) until a time",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=["loyalty", "monitoring", "silences"],
        doc_md=SILENCES_DOC,
        params={
            "action": Param("add", enum=["add", "expire", "list"], description="add, expire or list silences"),
            # The trigger form groups the fields of each action in a section of its own.
            # No default: a silence names its check on purpose (a preselected P0 check is a trap).
            "check_id": Param(None, type=["null", "string"], enum=[None, *ids], description="the check to silence",
                              **ADD),
            "entity_id": Param("", type=["null", "string"],
                               description="one entity only (a store, merchant or provider id); empty = the whole check",
                               **ADD),
            "duration": Param("2h", type=["null", "string"], description="how long from now (30m, 4h, 2d)", **ADD),
            "until": Param("", type=["null", "string"], description="or an end time, ISO 8601 (wins over duration)",
                           **ADD),
            "starts_at": Param("", type=["null", "string"],
                               description="start later, ISO 8601 (planned maintenance); empty = now", **ADD),
            "reason": Param("", type=["null", "string"],
                            description="why (required to add): shown in every message while it lasts", **ADD),
            "author": Param("", type=["null", "string"], description="who; default: the user who triggers", **ADD),
            "silence_id": Param(None, type=["null", "integer"], description="the silence's id",
                                section="To expire a silence"),
        },
        default_args={"owner": cat.dags[Severity.P0].owner, "retries": 0},
    ) as dag:

        @task(task_id="apply")
        def apply(**context):
            return tasks.apply_silence_request(context)

        apply()
    return dag
