"""What the tasks of a check DAG do at run time (the factory wires them together).

measure  -> the check's SQL on loyalty_db as of T (CheckMetricOperator)
decide   -> threshold + alert state: which notifications this evaluation needs
notify   -> send those notifications on one channel, each at most once
report_error -> runs only when measure failed after its retries: record and report it
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperator

from loyalty_checks import deliver
from loyalty_checks.catalog import Check, catalog
from loyalty_checks.state import RunRef

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


class CheckMetricOperator(BaseOperator):
    """Run one check's SQL file on `loyalty_db` as of T in a read-only transaction.

    Returns the measurement (value, details, entities) for the threshold branch. The
    SQL is an Airflow template, so the task's "Rendered Template" shows it.
    """

    template_fields = ("sql",)
    template_ext = (".sql",)
    template_fields_renderers = {"sql": "sql"}
    ui_color = "#e8f0fe"

    def __init__(self, *, check_id: str, sql: str, conn_id: str = deliver.LOYALTY_DB, **kwargs):
        super().__init__(**kwargs)
        self.check_id, self.sql, self.conn_id = check_id, sql, conn_id

    def execute(self, context) -> dict[str, Any]:
        from loyalty_checks.measure import measure_sql

        check = catalog().check(self.check_id)
        t = run_time(context)
        try:
            source = deliver.monitoring_db() if check.source == deliver.MONITORING_DB else deliver.postgres(self.conn_id)
            with source as conn:
                measurement = measure_sql(conn, check, self.sql, t)
        except Exception as exc:
            # Kept for report_error: the last try's error is what the report shows.
            context["ti"].xcom_push(key="error", value=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        n = len(measurement["entities"]) if measurement["entities"] is not None else None
        log.info("%s as of %s: value=%s entities=%s", check.id, t.isoformat(), measurement["value"], n)
        return measurement


# What was sent while the alert state was unreachable, so that it is not sent again.
FAILOPEN_VARIABLE = "loyalty_checks.paged_while_blind.{check_id}"
ERROR_WHILE_BLIND_VARIABLE = "loyalty_checks.error_reported_while_blind.{check_id}"


def decide(check_id: str, measurement: dict[str, Any], context) -> list[str] | None:
    """The threshold branch: record the evaluation, return the notify tasks to run (or None).

    Fails open: if the alert state cannot be reached and the check fires and pages, it
    pages anyway (an Airflow Variable remembers it, so that the trigger decided once the
    state is back does not page a second time).
    """
    from airflow.sdk import Variable

    from loyalty_checks.evaluate import evaluate
    from loyalty_checks.lifecycle import TRIGGER, channels_for
    from loyalty_checks.state import record_evaluation

    check = catalog().check(check_id)
    evaluation = evaluate(check, measurement)
    marker = FAILOPEN_VARIABLE.format(check_id=check_id)
    error_marker = ERROR_WHILE_BLIND_VARIABLE.format(check_id=check_id)
    try:
        paged_while_blind = Variable.get(marker, default=None) is not None
        error_while_blind = Variable.get(error_marker, default=None) is not None
        with deliver.monitoring_db() as conn:
            notes = record_evaluation(conn, check, run_ref(context), evaluation,
                                      paged_while_blind=paged_while_blind, error_while_blind=error_while_blind)
        for done, name in ((paged_while_blind, marker), (error_while_blind, error_marker)):
            if done:
                Variable.delete(name)
    except Exception:
        if not (evaluation.firing and "pagerduty" in channels_for(check, TRIGGER, escalated=False)):
            raise
        if Variable.get(marker, default=None) is not None:
            log.exception("%s fires, the alert state is unavailable, and it was paged already", check_id)
            return None
        log.exception("%s fires but the alert state is unavailable: paging anyway (fail open)", check_id)
        Variable.set(marker, run_time(context).isoformat())
        note = {"event": TRIGGER, "channels": ["pagerduty"], "new": [], "recovered": [],
                "firing": evaluation.entities, "firing_since": run_time(context).isoformat()}
        context["ti"].xcom_push(key="failopen", value={"note": note, "evaluation": evaluation.to_dict()})
        return [f"{check_id}.notify_pagerduty"]
    log.info("%s: %s, value %s, %d breaching entities; notifications: %s", check_id, evaluation.status,
             evaluation.value, len(evaluation.entities),
             ", ".join(f"{n['event']} -> {'+'.join(n['channels'])}" for n in notes) or "none")
    channels = sorted({ch for n in notes for ch in n["channels"]})
    return [f"{check_id}.notify_{ch}" for ch in channels] or None


def _notice(check: Check, note: dict[str, Any], evaluation: dict[str, Any], context):
    from loyalty_checks.messages import Notice

    cat = catalog()
    return Notice(check=check, event=note["event"], t=run_time(context), evaluation=evaluation,
                  dag_id=context["dag"].dag_id, run_url=run_url(context),
                  runbook_url=cat.runbook_link(check.id), entity_cap=cat.entity_cap, decided=note)


def send_direct(notice, channel: str) -> None:
    """Send one notice on one channel now."""
    from loyalty_checks.messages import pagerduty_event, slack_message

    if channel == "pagerduty":
        dedup = deliver.send_pagerduty(deliver.PAGERDUTY, pagerduty_event(notice), notice.t.isoformat())
        log.info("PagerDuty %s sent, dedup_key %s", notice.event, dedup)
    elif channel == "slack":
        deliver.send_slack(deliver.SLACK_ALERTS, slack_message(notice))
        log.info("Slack %s message sent", notice.event)
    else:
        raise ValueError(f"unknown channel {channel!r}")


def send_once(conn, notice, channel: str, run_id: str) -> bool:
    """Send one notice on one channel unless it was sent before; True if sent now."""
    from loyalty_checks.state import claim_notification, mark_sent, sending

    key = (notice.check.id, notice.t, notice.event, channel)
    with sending(conn, *key):
        if not claim_notification(conn, *key, run_id):
            log.info("%s %s on %s was already sent for this evaluation: not sending again",
                     notice.check.id, notice.event, channel)
            return False
        try:
            send_direct(notice, channel)
        except Exception as exc:
            mark_sent(conn, *key, error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        mark_sent(conn, *key)
    return True


def notify(check_id: str, channel: str, context) -> int:
    """Send this run's decided notifications of one check on one channel."""
    from loyalty_checks.state import load_evaluation

    check = catalog().check(check_id)
    ref = run_ref(context)
    failopen = context["ti"].xcom_pull(task_ids=f"{check_id}.decide", key="failopen")
    if failopen:  # decided without the alert state: send directly, once per task try
        send_direct(_notice(check, failopen["note"], failopen["evaluation"], context), channel)
        return 1
    with deliver.monitoring_db() as conn:
        evaluation = load_evaluation(conn, check_id, ref.t)
        if evaluation is None:
            raise RuntimeError(f"{check_id}: no evaluation recorded for T={ref.t.isoformat()}")
        return sum(send_once(conn, _notice(check, note, evaluation, context), channel, ref.run_id)
                   for note in evaluation["notifications"] if channel in note["channels"])


def report_error(check_id: str, context) -> list[str]:
    """measure failed after its retries: record `error` and report it once on its channels.

    Fails open: when the alert state cannot be reached either, the error is still sent,
    once (an Airflow Variable remembers it until the state is back, see decide).
    """
    from airflow.sdk import Variable

    from loyalty_checks.lifecycle import ERROR, channels_for
    from loyalty_checks.state import load_evaluation, record_error

    check = catalog().check(check_id)
    ref = run_ref(context)
    error = str(context["ti"].xcom_pull(task_ids=f"{check_id}.measure", key="error")
                or f"{check_id}.measure failed; see its task log")
    log.error("%s could not be evaluated at %s: %s", check_id, ref.t.isoformat(), error)
    with ExitStack() as stack:
        try:
            conn = stack.enter_context(deliver.monitoring_db())
            notes = record_error(conn, check, ref, error)
            evaluation = load_evaluation(conn, check_id, ref.t)
        except Exception:  # noqa: BLE001
            log.exception("Alert state unavailable: reporting the error without it")
            conn, evaluation = None, {"error": error}
            marker = ERROR_WHILE_BLIND_VARIABLE.format(check_id=check_id)
            reported = Variable.get(marker, default=None) is not None
            notes = [] if reported else [{"event": ERROR, "channels": channels_for(check, ERROR, escalated=False)}]
            if not reported:
                Variable.set(marker, ref.t.isoformat())
        failures = []
        for note in notes:
            for channel in note["channels"]:  # one channel failing must not stop the next
                notice = _notice(check, note, evaluation, context)
                try:
                    send_once(conn, notice, channel, ref.run_id) if conn else send_direct(notice, channel)
                except Exception as exc:  # noqa: BLE001
                    log.exception("Could not report %s on %s", check_id, channel)
                    failures.append(exc)
        if failures:
            raise failures[0]
    events = [n["event"] for n in notes]
    log.info("%s error reported: %s", check_id, events or "already reported before")
    return events


def apply_silence_request(context) -> list[dict[str, Any]]:
    """The `loyalty_silences` DAG's task: params -> silences.apply_request."""
    from loyalty_checks.silences import apply_request

    request = dict(context["params"])
    request["author"] = request.get("author") or getattr(context["dag_run"], "triggering_user_name", None)
    with deliver.monitoring_db() as conn:
        result = apply_request(conn, request)
    for row in result:
        log.info("silence %s", {k: str(v) for k, v in row.items()})
    return [{k: str(v) for k, v in row.items()} for row in result]


def ping_heartbeat(failed: bool) -> None:
    """GET the `loyalty_heartbeat` HTTP connection (Healthchecks.io, Cronitor...), if defined.

    An outside service that stops hearing it pages: scheduler down, workers gone,
    callbacks lost. With `failed`, the connection extra `fail_endpoint` (e.g. "/fail" for
    Healthchecks.io) is appended, when set.
    """
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowSkipException

    try:
        conn = BaseHook.get_connection(deliver.HEARTBEAT)
    except AirflowNotFoundException:
        raise AirflowSkipException(f"no {deliver.HEARTBEAT!r} connection: no outside heartbeat") from None
    endpoint = (conn.extra_dejson.get("fail_endpoint") or "") if failed else ""
    response = HttpHook(method="GET", http_conn_id=deliver.HEARTBEAT).run(
        endpoint=endpoint, extra_options={"timeout": deliver.HTTP_TIMEOUT})
    log.info("heartbeat%s sent: HTTP %s", " (failed run)" if failed else "", response.status_code)
