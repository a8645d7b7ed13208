"""The weekly P2 digest: one Slack message with every P2 check and the key metrics.

    <check groups> ─┐
    digest_metrics ─┴─> post_digest (all_done) ──┐
    everything ─────────────────────────────────> fail_if_any_failed (one_failed)

post_digest runs even when a check could not be evaluated (it says so in the digest);
fail_if_any_failed then fails, so such a run still shows red in the Airflow UI.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import TriggerRule, task

from loyalty_checks import channels, connections
from loyalty_checks.catalog import DIGEST, Catalog, Severity
from loyalty_checks.lifecycle import shown_status
from loyalty_checks.parsing import build
from loyalty_checks.text import format_time, format_value, rule_text, slack_escape, truncate

log = logging.getLogger(__name__)
DIGEST_ID = "weekly_digest"
DIGEST_CHANNEL = "slack"  # the registered channel the digest goes out on (connection slack_loyalty_reports)
STATUS_ICON = {"firing": "🔴", "pending": "🟡", "ok": "🟢", "no_data": "⚪", "error": "⚠️", None: "⚠️"}
SECTION_MAX = 3000


def digest_checks(cat: Catalog) -> tuple:
    """The checks that report in the weekly digest: those routed to it."""
    return tuple(c for c in cat.checks if DIGEST in c.routes)


def digest_message(cat: Catalog, t, evaluations: dict[str, dict | None],
                   metrics: dict[str, Any] | None, open_alerts: list[tuple[str, Any]],
                   silences: list[tuple] = (), quality: str | None = None) -> dict[str, Any]:
    """The Slack body of the digest (pure: built from stored evaluations and metric rows)."""
    lines = []
    firing = 0
    for check in digest_checks(cat):
        ev = evaluations.get(check.id)
        # As the lifecycle decided it (for_runs / clear_runs count), not the raw threshold.
        status = shown_status(ev["status"], ev.get("alert_status")) if ev else None
        firing += status == "firing"
        title = f"<{cat.runbook_link(check.id)}|{check.title}>" if status == "firing" else check.title
        head = (f"{STATUS_ICON[status]} *{title}* (`{check.id}`): "
                f"{format_value(ev.get('value') if ev else None, check.unit)}"
                f" — fires when {rule_text(check)}")
        if status is None or status == "error":
            reason = slack_escape((ev or {}).get("error") or "not evaluated in this run", 200)
            head += f" — *could not be evaluated*: {reason}"
        lines.append(head)
        entities = (ev or {}).get("entities") or []
        if entities:
            shown = ", ".join(f"{slack_escape(e['name'])} ({format_value(e['value'], check.unit)})"
                              for e in entities[: cat.entity_cap])
            more = f", +{len(entities) - cat.entity_cap} more" if len(entities) > cat.entity_cap else ""
            lines.append(f"      {len(entities)} {check.entity}s: {shown}{more}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"📊 Loyalty weekly digest · {format_time(t)}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate("*P2 checks*\n" + "\n".join(lines), SECTION_MAX)}},
    ]
    alerts = "\n".join(f"🔴 `{cid}` firing since {format_time(since)}" for cid, since in open_alerts) or "none"
    alerts_text = f"*Open P0/P1 alerts*\n{alerts}"
    if quality:  # loyalty_checks.quality.digest_section: what paged or flapped most, silences ending
        alerts_text += f"\n\n*Alert quality, last 7 days*\n{quality}"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(alerts_text, SECTION_MAX)}})
    if silences:
        quiet = "\n".join(
            f"🔕 `{cid}`{' ' + slack_escape(entity) if entity else ''} until {format_time(ends)}"
            f" by {slack_escape(author)} — {slack_escape(reason, 200)}"
            for cid, entity, ends, author, reason in silences)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(f"*Active silences*\n{quiet}", SECTION_MAX)}})
    for metric in cat.digest_metrics:
        rows = (metrics or {}).get(metric.id)
        if rows is None:
            body = "_could not be computed in this run_"
        elif not rows:
            body = "_no data_"
        else:
            body = "\n".join(f"• {slack_escape(r['label'])}: {format_value(r['value'], metric.unit)}" for r in rows)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(f"*{metric.title}*\n{body}", SECTION_MAX)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                   f"`loyalty_p2_checks` · runbooks: {cat.runbook_link(DIGEST_ID)}"}]})
    text = f"Loyalty weekly digest {format_time(t)}: {firing} of {len(digest_checks(cat))} P2 checks firing"
    return {"text": text, "blocks": blocks}


def collect_metrics(cat: Catalog, t, timeout) -> dict[str, list[dict[str, Any]]]:
    from loyalty_checks.measure import digest_metric

    with connections.postgres(connections.LOYALTY_DB) as conn:
        return {m.id: digest_metric(conn, m, t, timeout) for m in cat.digest_metrics}


def post(cat: Catalog, metrics: dict[str, Any] | None, context) -> bool:
    """Send the digest once per evaluation time T; True if sent now."""
    from loyalty_checks.store import reports
    from loyalty_checks.store.alerts import NotificationKey, load_evaluation, once
    from loyalty_checks.tasks import run_ref

    ref = run_ref(context)
    with connections.monitoring_db() as conn:
        evaluations = {c.id: load_evaluation(conn, c.id, ref.t) for c in digest_checks(cat)}
        open_alerts = reports.open_alerts(conn, [c.id for c in cat.checks if c not in digest_checks(cat)])
        silences = [(s["check_id"], s["entity_id"], s["ends_at"], s["author"], s["reason"])
                    for s in sorted(reports.silences_active_at(conn, ref.t), key=lambda s: (s["check_id"], s["id"]))]
        body = digest_message(cat, ref.t, evaluations, metrics, open_alerts, silences, _quality(conn, ref.t, cat))
        slack = channels.get(DIGEST_CHANNEL, connections.SLACK_REPORTS)  # to the reports' webhook
        key = NotificationKey(DIGEST_ID, ref.t, DIGEST, slack.name)
        sent = once(conn, key, ref.run_id, lambda: slack.post(body, cat.dags[Severity.P2].http_timeout.total_seconds()))
    if not sent:
        log.info("The digest for %s was already sent", ref.t.isoformat())
    return sent


def _quality(conn, t, cat: Catalog) -> str | None:
    """The "alert quality, last 7 days" lines; the digest goes out without them on a failure."""
    from loyalty_checks.quality import digest_section

    try:
        return digest_section(conn, t, cat)
    except Exception:  # noqa: BLE001 - a report section must not stop the digest
        log.exception("Alert quality for the digest could not be computed")
        return None


def add_digest(groups: list, cat: Catalog, task_id: str | None = None) -> None:
    """Add the digest tasks after the P2 check groups (inside the DAG's `with` block); in a
    task process (`task_id`), only that task (factory.py)."""
    spec = cat.dags[Severity.P2]

    def digest_metrics():
        @task(task_id="digest_metrics")
        def digest_metrics(**context):
            from loyalty_checks.tasks import run_time

            return collect_metrics(cat, run_time(context), spec.statement_timeout)
        return digest_metrics()

    def post_digest():
        @task(task_id="post_digest", trigger_rule=TriggerRule.ALL_DONE)
        def post_digest(**context):
            # Pulled, not passed: a failed digest_metrics leaves no XCom, and the digest still goes out.
            metrics = context["ti"].xcom_pull(task_ids="digest_metrics")
            return post(cat, metrics, context)
        return post_digest()

    def fail_if_any_failed():
        @task(task_id="fail_if_any_failed", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
        def fail_if_any_failed():
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException("A check or a digest metric could not be evaluated: see the red tasks")
        return fail_if_any_failed()

    made = build({"digest_metrics": digest_metrics, "post_digest": post_digest,
                   "fail_if_any_failed": fail_if_any_failed},
                  [("digest_metrics", "post_digest"), ("digest_metrics", "fail_if_any_failed"),
                   ("post_digest", "fail_if_any_failed")], task_id)
    for name in ("post_digest", "fail_if_any_failed"):  # the watcher sees every task
        if name in made:
            groups >> made[name]
