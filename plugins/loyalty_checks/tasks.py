"""The tasks of a check DAG: thin adapters from Airflow's context to pipeline.py.

measure      -> the check's SQL on its source as of T, evaluate + pipeline.record (the
                lifecycle decides), and skip the notify tasks with nothing to send
                (CheckMetricOperator): a quiet check is one process
decide       -> the threshold branch in the grid: an EmptyOperator, which the scheduler
                completes without a process; the notify tasks measure did not skip follow it
notify_<ch>  -> pipeline.deliver of this run's decided notifications on one channel
report_error -> measure failed after its retries: pipeline.record of the error, then deliver
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperator

from loyalty_checks import connections
from loyalty_checks.catalog import Check, catalog
from loyalty_checks.connections import timeouts_for
from loyalty_checks.store.alerts import RunRef

log = logging.getLogger(__name__)


def run_time(context) -> dt.datetime:
    """T: the run's logical time (the scheduled moment, or `airflow dags test <date>`)."""
    t = context.get("logical_date") or context["dag_run"].run_after
    return dt.datetime.fromtimestamp(t.timestamp(), tz=dt.timezone.utc)


def run_ref(context) -> RunRef:
    return RunRef(dag_id=context["dag"].dag_id, run_id=context["run_id"], t=run_time(context))


def run_url(context) -> str:
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback=None) or "http://localhost:8080"
    return f"{base.rstrip('/')}/dags/{context['dag'].dag_id}/runs/{quote(context['run_id'], safe='')}"


def bound_parameters_template(check: Check) -> str:
    """The values the check's SQL gets, as a JSON template Airflow renders per run (T from the run)."""
    import json

    from loyalty_checks.text import format_duration

    def shown(value: Any) -> Any:
        return f"interval '{format_duration(value)}'" if isinstance(value, dt.timedelta) else value

    window = check.baseline.span if check.baseline is not None else check.window
    # A run triggered without a logical date has none in its template context (not even
    # None): the dag run's attribute is always there.
    values = {"t": "{{ (dag_run.logical_date or dag_run.run_after).isoformat() }}",
              "window": shown(window) if window is not None else None,
              **({"baseline_window": shown(check.baseline.window), "min_expected": check.baseline.min_expected}
                 if check.baseline is not None else {}),
              **{name: shown(value) for name, value in check.params.items()}}
    return json.dumps(values, indent=2)


def readable_sql(sql: str) -> str:
    """The SQL with every apostrophe inside a `--` comment written as ’: an unpaired one
    would make the UI's highlighter read the rest of the file as a string. Comments only:
    what the query does is unchanged."""
    lines = []
    for line in sql.splitlines(keepends=True):
        quoted, start = False, None
        for i, ch in enumerate(line):
            if ch == "'":
                quoted = not quoted
            elif not quoted and line.startswith("--", i):
                start = i
                break
        lines.append(line if start is None else line[:start] + line[start:].replace("'", "\u2019"))
    return "".join(lines)


class CheckFailed(RuntimeError):
    """The check's SQL could not be run, or broke its contract (the error of this try)."""


class StateUnavailable(RuntimeError):
    """The check was measured, but its alert state could not be reached and nothing had
    to be sent without it (fail open does not apply): the run turns red, nobody is paged."""


class CheckMetricOperator(BaseOperator):
    """Run one check's SQL file on `loyalty_db` as of T in a read-only transaction, then
    decide and record (`decide`), and skip the notify tasks that have nothing to send.

    The SQL is an Airflow template, so the task's "Rendered Template" shows it, and beside
    it `bound_parameters`: the values bound to %(t)s, %(window)s and the check's params.
    """

    template_fields = ("sql", "bound_parameters")
    template_ext = (".sql",)
    template_fields_renderers = {"sql": "sql", "bound_parameters": "json"}
    ui_color = "#e8f0fe"

    def __init__(self, *, check_id: str, sql: str, conn_id: str = connections.LOYALTY_DB,
                 bound_parameters: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.check_id, self.sql, self.conn_id = check_id, sql, conn_id
        self.bound_parameters = bound_parameters or bound_parameters_template(catalog().check(check_id))

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self.sql = readable_sql(self.sql)  # what "Rendered Template" shows, and what runs

    def execute(self, context) -> None:
        from airflow.sdk.exceptions import DownstreamTasksSkipped

        from loyalty_checks.lifecycle import channels_used

        check = catalog().check(self.check_id)
        if check.requires_connection and not connections.defined(check.requires_connection):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"no {check.requires_connection!r} connection here: {check.id} does not apply")
        measurement = self.measure(check, context)
        try:
            channels = decide(check, measurement, context)
        except StateUnavailable as exc:
            # Not a measurement error: report_error, which runs when this task fails, says nothing.
            context["ti"].xcom_push(key="state_error", value=str(exc)[:2000])
            raise
        idle = [f"{check.id}.notify_{ch}" for ch in channels_used(check) if ch not in channels]
        if idle:
            raise DownstreamTasksSkipped(tasks=idle)

    def measure(self, check: Check, context):
        """The measure stage as of T on the check's source; a failure fails this try (Airflow
        retries it; after the last, report_error reports it)."""
        from loyalty_checks.pipeline import Measurement, measure

        t = run_time(context)
        try:
            # Time limits from the catalog (connections.py): a silent database fails this try in time.
            source = (connections.monitoring_db(timeouts_for(check)) if check.source == connections.MONITORING_DB
                      else connections.postgres(self.conn_id, check=check))
            with source as conn:
                measurement = measure(check, t, conn, self.sql)
        except Exception as exc:  # the connection could not be opened (or closed)
            measurement = Measurement.failed(check.id, t, exc)
        if measurement.error is not None:
            # Kept for report_error: the last try's error is what the report shows.
            context["ti"].xcom_push(key="error", value=measurement.error)
            raise CheckFailed(measurement.error)
        n = len(measurement.entities) if measurement.entities is not None else None
        log.info("%s as of %s: value=%s entities=%s", check.id, t.isoformat(), measurement.value, n)
        return measurement


# What fail open sent while the alert state was unreachable, and when: one XCom of the
# check's `measure` task, {"paged_at": T, "error_reported_at": T}, written by measure (it
# paged) or report_error (it reported the error) and carried forward by each later blind
# send, so that one pull (the latest, across runs) tells both.
BLIND_KEY = "sent_while_blind"


def _blind_marker(check: Check, context) -> dict[str, str | None]:
    value = context["ti"].xcom_pull(task_ids=f"{check.id}.measure", key=BLIND_KEY,
                                    include_prior_dates=True, map_indexes=-1)
    return value if isinstance(value, dict) else {}


def _sent_while_blind(marker: dict[str, str | None]):
    """What this check's fail-open path sent in earlier runs, from its marker."""
    from loyalty_checks.lifecycle import SentWhileBlind

    when = [dt.datetime.fromisoformat(v) if v else None for v in (marker.get("paged_at"),
                                                               marker.get("error_reported_at"))]
    return SentWhileBlind(paged_at=when[0], error_reported_at=when[1]) if any(when) else None


def _remember_blind(check: Check, context, marker: dict[str, str | None], what: str, t: dt.datetime) -> None:
    """Carry the check's marker (as pulled at the start of the task) forward with `what`
    ("paged_at", "error_reported_at") at T."""
    from airflow.sdk.bases.xcom import BaseXCom

    ti = context["ti"]
    BaseXCom.set(key=BLIND_KEY, value={**marker, what: t.isoformat()},
                 dag_id=ti.dag_id, task_id=f"{check.id}.measure", run_id=ti.run_id, map_index=-1)


def decide(check: Check, measurement, context) -> list[str]:
    """The threshold branch: pipeline.run (threshold, lifecycle, record), then the channels
    that have something to send.

    Fails open: when the alert state cannot be reached, the lifecycle's `fail_open`
    says what still goes out (a firing check that pages still pages, once while blind);
    when nothing has to, it raises StateUnavailable.
    """
    from loyalty_checks import lifecycle, pipeline
    from loyalty_checks.store.alerts import AlertStore

    run = run_ref(context)
    marker = _blind_marker(check, context)
    blind = _sent_while_blind(marker)
    try:
        with connections.monitoring_db(check=check) as conn:
            decision = pipeline.run(check, measurement, AlertStore(conn, run), blind)
    except Exception as exc:
        evaluation = pipeline.outcome_of(check, measurement)  # decided without the state: fail open
        notes = lifecycle.fail_open(check, evaluation, blind, run.t)
        if notes is None:
            raise StateUnavailable(f"{check.id} was measured ({evaluation.status}) but its alert state is"
                                   f" unavailable: {type(exc).__name__}: {exc}") from exc
        if not notes:
            log.exception("%s fires, the alert state is unavailable, and it was paged already", check.id)
            return []
        log.exception("%s fires but the alert state is unavailable: paging anyway (fail open)", check.id)
        _remember_blind(check, context, marker, "paged_at", run.t)
        context["ti"].xcom_push(key="failopen", value={"note": notes[0].to_dict(), "evaluation": evaluation.to_dict()})
        return list(notes[0].channels)
    evaluation, notes = decision.outcome, [n.to_dict() for n in decision.notifications]
    log.info("%s: %s, value %s, %d breaching entities; notifications: %s", check.id, evaluation.status,
             getattr(evaluation, "value", None), len(getattr(evaluation, "entities", ())),
             ", ".join(f"{n['event']} -> {'+'.join(n['channels'])}" for n in notes) or "none")
    return sorted({ch for n in notes for ch in n["channels"]})


def _notice(check: Check, note: dict[str, Any], evaluation: dict[str, Any], context):
    from loyalty_checks.messages import Notice

    cat = catalog()
    return Notice(check=check, event=note["event"], t=run_time(context), evaluation=evaluation,
                  dag_id=context["dag"].dag_id, run_url=run_url(context),
                  runbook_url=cat.runbook_link(check.id), entity_cap=cat.entity_cap, decided=note,
                  http_timeout=cat.dags[check.severity].http_timeout.total_seconds())


def notify(check: Check, channel: str, context) -> int:
    """Send this run's decided notifications of one check on one channel, each once."""
    from loyalty_checks import channels
    from loyalty_checks.pipeline import deliver as deliver_once
    from loyalty_checks.store.alerts import load_evaluation

    ref = run_ref(context)
    failopen = context["ti"].xcom_pull(task_ids=f"{check.id}.measure", key="failopen")
    if failopen:  # decided without the alert state: nothing to claim, send directly
        channels.get(channel).send(_notice(check, failopen["note"], failopen["evaluation"], context))
        return 1
    with connections.monitoring_db(check=check) as conn:
        evaluation = load_evaluation(conn, check.id, ref.t)
        if evaluation is None:
            raise RuntimeError(f"{check.id}: no evaluation recorded for T={ref.t.isoformat()}")
        return sum(deliver_once(conn, _notice(check, note, evaluation, context), channel, ref.run_id)
                   for note in evaluation["notifications"] if channel in note["channels"])


def report_error(check: Check, context) -> list[str]:
    """measure failed after its retries: record the error (the lifecycle decides whether
    it is news) and report it on each channel, the page first; one channel failing does
    not stop the next. Fails open like `decide` when the state cannot be reached."""
    from airflow.sdk.exceptions import AirflowSkipException

    from loyalty_checks import channels, lifecycle, pipeline
    from loyalty_checks.store.alerts import AlertStore

    ref = run_ref(context)
    pulled = context["ti"].xcom_pull(task_ids=f"{check.id}.measure", key="error")
    if pulled is None and context["ti"].xcom_pull(task_ids=f"{check.id}.measure", key="state_error"):
        # Measured, not recorded, nothing to page: the run is red (measure failed), nobody is told.
        raise AirflowSkipException(f"{check.id} was measured; only its alert state was unavailable (measure's log)")
    error = str(pulled or f"{check.id}.measure failed; see its task log")
    log.error("%s could not be evaluated at %s: %s", check.id, ref.t.isoformat(), error)
    measurement = pipeline.Measurement.failed(check.id, ref.t, error)
    outcome = pipeline.outcome_of(check, measurement)
    marker = _blind_marker(check, context)
    blind = _sent_while_blind(marker)
    with ExitStack() as stack:
        try:
            conn = stack.enter_context(connections.monitoring_db(check=check))
            decision = pipeline.run(check, measurement, AlertStore(conn, ref), blind)
            notes = [n.to_dict() for n in decision.notifications]
        except Exception:  # noqa: BLE001
            log.exception("Alert state unavailable: reporting the error without it")
            conn = None
            notes = [n.to_dict() for n in lifecycle.fail_open(check, outcome, blind, ref.t) or []]
            if notes:
                _remember_blind(check, context, marker, "error_reported_at", ref.t)
        evaluation = {"error": error}
        failures = []
        for note in notes:
            for channel in note["channels"]:
                notice = _notice(check, note, evaluation, context)
                try:
                    if conn is None:
                        channels.get(channel).send(notice)
                    else:
                        pipeline.deliver(conn, notice, channel, ref.run_id)
                except Exception as exc:  # noqa: BLE001
                    log.exception("Could not report %s on %s", check.id, channel)
                    failures.append(exc)
        if failures:
            raise failures[0]
    events = [n["event"] for n in notes]
    log.info("%s error reported: %s", check.id, events or "already reported before")
    return events


def apply_silence_request(context) -> list[dict[str, Any]]:
    """The `loyalty_silences` DAG's task: params -> silences.apply_request."""
    from loyalty_checks.silences import apply_request

    request = dict(context["params"])
    request["author"] = request.get("author") or getattr(context["dag_run"], "triggering_user_name", None)
    with connections.monitoring_db() as conn:
        result = apply_request(conn, request)
    for row in result:
        log.info("silence %s", {k: str(v) for k, v in row.items()})
    return [{k: str(v) for k, v in row.items()} for row in result]


def ping_heartbeat(failed: bool, timeout: dt.timedelta) -> None:
    """GET the `loyalty_heartbeat` HTTP connection (Healthchecks.io, Cronitor...), if defined.

    An outside service that stops hearing it pages: scheduler down, workers gone,
    callbacks lost. With `failed`, the connection extra `fail_endpoint` (e.g. "/fail" for
    Healthchecks.io) is appended, when set.
    """
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowSkipException

    try:
        conn = BaseHook.get_connection(connections.HEARTBEAT)
    except AirflowNotFoundException:
        raise AirflowSkipException(f"no {connections.HEARTBEAT!r} connection: no outside heartbeat") from None
    endpoint = (conn.extra_dejson.get("fail_endpoint") or "") if failed else ""
    response = HttpHook(method="GET", http_conn_id=connections.HEARTBEAT).run(
        endpoint=endpoint, extra_options={"timeout": timeout.total_seconds()})
    log.info("heartbeat%s sent: HTTP %s", " (failed run)" if failed else "", response.status_code)
